//! Conditions and mutations, compiled once at load: JSONPath queries parsed, regular
//! expressions built. Evaluation is a pure function of the request document.

use jsonpath_rust::parser::model::{
    Comparable, Filter, FilterAtom, FnArg, JpQuery, Literal, Segment, Selector, Test as FilterTest, TestFunction,
};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use regex::Regex;
use serde_json::{Map, Value};

use super::spec::{ConditionSpec, MutationSpec, SetSpec};

/// A compiled JSONPath query and its text, for messages.
#[derive(Debug)]
pub struct Path {
    text: String,
    query: JpQuery,
    /// Set when the query names members only, as most policy paths do: such a query
    /// selects at most one value, found by walking the document. (The query engine also
    /// builds the normalized path of every node it visits, which costs more than the walk.)
    members: Option<Vec<String>>,
}

impl Path {
    pub fn compile(text: &str) -> Result<Path, String> {
        let query = parse_json_path(text).map_err(|e| format!("JSONPath {text:?} does not parse: {e}"))?;
        check_patterns(&query.segments).map_err(|e| format!("JSONPath {text:?}: {e}"))?;
        Ok(Path { text: text.to_string(), members: plain_members(&query), query })
    }

    /// Whether the query may select from the document's member `name` (`class`): a
    /// query that does not start with a member name may reach any.
    pub fn may_read(&self, name: &str) -> bool {
        match self.query.segments.first() {
            Some(Segment::Selector(Selector::Name(first))) => first == name,
            Some(_) => true,
            None => false,
        }
    }

    pub fn select<'a>(&self, document: &'a Value) -> Result<Vec<&'a Value>, String> {
        if let Some(members) = &self.members {
            return Ok(members.iter().try_fold(document, |value, name| value.get(name)).into_iter().collect());
        }
        js_path_process(&self.query, document)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .map_err(|e| format!("{}: {e}", self.text))
    }
}

/// The outcome of a condition: it holds, or it fails with a message for the user.
#[derive(Debug, PartialEq)]
pub enum Eval {
    Pass,
    Fail(String),
}

#[derive(Debug)]
pub struct Condition {
    test: Test,
    message: Option<String>,
}

#[derive(Debug)]
enum Test {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Check(Box<Check>),
}

#[derive(Debug)]
struct Check {
    path: Path,
    required: bool,
    forbidden: bool,
    equals: Option<Value>,
    one_of: Option<Vec<Value>>,
    not_one_of: Option<Vec<Value>>,
    pattern: Option<Regex>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    minimum: Option<f64>,
    maximum: Option<f64>,
}

impl Condition {
    /// Compiles a condition; `at` locates it in error messages (`validate[0].any[1]`).
    pub fn compile(spec: &ConditionSpec, at: &str) -> Result<Condition, String> {
        let shapes = [spec.all.is_some(), spec.any.is_some(), spec.not.is_some(), spec.path.is_some()];
        if shapes.iter().filter(|s| **s).count() != 1 {
            return Err(format!("{at}: needs exactly one of all, any, not or path"));
        }
        let operators = spec.required.is_some()
            || spec.forbidden.is_some()
            || spec.equals.is_some()
            || spec.one_of.is_some()
            || spec.not_one_of.is_some()
            || spec.pattern.is_some()
            || spec.min_length.is_some()
            || spec.max_length.is_some()
            || spec.minimum.is_some()
            || spec.maximum.is_some();
        let list = |items: &[ConditionSpec], name: &str| -> Result<Vec<Condition>, String> {
            if items.is_empty() {
                return Err(format!("{at}.{name}: must list at least one condition"));
            }
            items.iter().enumerate().map(|(i, c)| Condition::compile(c, &format!("{at}.{name}[{i}]"))).collect()
        };
        let test = if let Some(items) = &spec.all {
            Test::All(list(items, "all")?)
        } else if let Some(items) = &spec.any {
            Test::Any(list(items, "any")?)
        } else if let Some(inner) = &spec.not {
            Test::Not(Box::new(Condition::compile(inner, &format!("{at}.not"))?))
        } else {
            let path = spec.path.as_deref().unwrap_or_default();
            if !operators {
                return Err(format!("{at}: path {path:?} has nothing to check (required, equals, pattern, ...)"));
            }
            let pattern = spec
                .pattern
                .as_deref()
                .map(|p| Regex::new(p).map_err(|e| format!("{at}.pattern {p:?} is not a regular expression: {e}")))
                .transpose()?;
            Test::Check(Box::new(Check {
                path: Path::compile(path).map_err(|e| format!("{at}.path: {e}"))?,
                required: spec.required.unwrap_or(false),
                forbidden: spec.forbidden.unwrap_or(false),
                equals: spec.equals.clone(),
                one_of: spec.one_of.clone(),
                not_one_of: spec.not_one_of.clone(),
                pattern,
                min_length: spec.min_length,
                max_length: spec.max_length,
                minimum: spec.minimum,
                maximum: spec.maximum,
            }))
        };
        if operators && !matches!(test, Test::Check(_)) {
            return Err(format!(
                "{at}: checks such as required or pattern go beside a path, not beside all, any or not"
            ));
        }
        Ok(Condition { test, message: spec.message.clone() })
    }

    /// Whether evaluating the condition may read the document's member `name`.
    pub fn may_read(&self, name: &str) -> bool {
        match &self.test {
            Test::All(items) | Test::Any(items) => items.iter().any(|c| c.may_read(name)),
            Test::Not(inner) => inner.may_read(name),
            Test::Check(check) => check.path.may_read(name),
        }
    }

    /// `Err` means the condition could not be evaluated (a value of the wrong type).
    pub fn eval(&self, document: &Value) -> Result<Eval, String> {
        let outcome = match &self.test {
            Test::All(items) => {
                let mut outcome = Eval::Pass;
                for item in items {
                    if let Eval::Fail(message) = item.eval(document)? {
                        outcome = Eval::Fail(message);
                        break;
                    }
                }
                outcome
            }
            Test::Any(items) => {
                let mut failures = Vec::new();
                let mut error = None;
                for item in items {
                    match item.eval(document) {
                        Ok(Eval::Pass) => return Ok(Eval::Pass),
                        Ok(Eval::Fail(message)) => failures.push(message),
                        Err(e) => error = Some(e),
                    }
                }
                if let Some(error) = error {
                    return Err(error);
                }
                Eval::Fail(format!("none of these holds: {}", failures.join("; ")))
            }
            Test::Not(inner) => match inner.eval(document)? {
                Eval::Pass => Eval::Fail("a condition that must not hold holds".into()),
                Eval::Fail(_) => Eval::Pass,
            },
            Test::Check(check) => return check.eval(document, self.message.as_deref()),
        };
        Ok(match (outcome, &self.message) {
            (Eval::Fail(_), Some(message)) => Eval::Fail(message.clone()),
            (outcome, _) => outcome,
        })
    }
}

impl Check {
    fn eval(&self, document: &Value, message: Option<&str>) -> Result<Eval, String> {
        let values: Vec<&Value> = self.path.select(document)?.into_iter().filter(|v| !v.is_null()).collect();
        let path = &self.path.text;
        let fail = |value: Option<&Value>, default: String| {
            let shown = value.map(show).unwrap_or_else(|| "absent".into());
            Eval::Fail(match message {
                Some(template) => template.replace("{{value}}", &shown).replace("{{path}}", path),
                None => default,
            })
        };
        if values.is_empty() {
            return Ok(if self.required { fail(None, format!("{path} is required")) } else { Eval::Pass });
        }
        if self.forbidden {
            return Ok(fail(Some(values[0]), format!("{path} must not be set, but is {}", show(values[0]))));
        }
        for value in values {
            if let Some(expected) = &self.equals
                && value != expected
            {
                return Ok(fail(Some(value), format!("{path} is {}, not {}", show(value), show(expected))));
            }
            if let Some(allowed) = &self.one_of
                && !allowed.contains(value)
            {
                let listed: Vec<String> = allowed.iter().map(show).collect();
                return Ok(fail(Some(value), format!("{path} is {}; allowed: {}", show(value), listed.join(", "))));
            }
            if let Some(refused) = &self.not_one_of
                && refused.contains(value)
            {
                return Ok(fail(Some(value), format!("{path} must not be {}", show(value))));
            }
            if let Some(pattern) = &self.pattern {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("{path} is {}, and a pattern applies only to strings", type_name(value)))?;
                if !pattern.is_match(text) {
                    return Ok(fail(
                        Some(value),
                        format!("{path} is {}, which does not match {}", show(value), pattern.as_str()),
                    ));
                }
            }
            if self.min_length.is_some() || self.max_length.is_some() {
                let length = match value {
                    Value::String(s) => s.chars().count(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    other => {
                        return Err(format!(
                            "{path} is {}, and a length applies only to strings, lists and maps",
                            type_name(other)
                        ));
                    }
                };
                if let Some(min) = self.min_length.filter(|min| length < *min) {
                    return Ok(fail(Some(value), format!("{path} has length {length}, less than {min}")));
                }
                if let Some(max) = self.max_length.filter(|max| length > *max) {
                    return Ok(fail(Some(value), format!("{path} has length {length}, more than {max}")));
                }
            }
            if self.minimum.is_some() || self.maximum.is_some() {
                let number = value.as_f64().ok_or_else(|| {
                    format!("{path} is {}, and a numeric bound applies only to numbers", type_name(value))
                })?;
                if let Some(min) = self.minimum.filter(|min| number < *min) {
                    return Ok(fail(Some(value), format!("{path} is {number}, less than {min}")));
                }
                if let Some(max) = self.maximum.filter(|max| number > *max) {
                    return Ok(fail(Some(value), format!("{path} is {number}, more than {max}")));
                }
            }
        }
        Ok(Eval::Pass)
    }
}

fn show(value: &Value) -> String {
    value.to_string()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// A change to the object, at a plain member path below `$.object`.
#[derive(Debug)]
pub enum Mutation {
    Set(Vec<String>, Value),
    SetDefault(Vec<String>, Value),
    Remove(Vec<String>),
}

impl Mutation {
    pub fn compile(spec: &MutationSpec, at: &str) -> Result<Vec<Mutation>, String> {
        let given = [
            spec.set.is_some(),
            spec.set_default.is_some(),
            spec.add_labels.is_some(),
            spec.add_annotations.is_some(),
            spec.remove.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(format!("{at}: needs exactly one of set, setDefault, addLabels, addAnnotations or remove"));
        }
        let target = |set: &SetSpec| member_path(&set.path).map_err(|e| format!("{at}: {e}"));
        Ok(if let Some(set) = &spec.set {
            vec![Mutation::Set(target(set)?, set.value.clone())]
        } else if let Some(set) = &spec.set_default {
            vec![Mutation::SetDefault(target(set)?, set.value.clone())]
        } else if let Some(labels) = &spec.add_labels {
            map_entries("labels", labels)
        } else if let Some(annotations) = &spec.add_annotations {
            map_entries("annotations", annotations)
        } else {
            let path = &spec.remove.as_ref().map(|r| r.path.clone()).unwrap_or_default();
            vec![Mutation::Remove(member_path(path).map_err(|e| format!("{at}: {e}"))?)]
        })
    }

    /// The member names below `$.object` that this mutation changes.
    pub fn path(&self) -> &[String] {
        match self {
            Mutation::Set(path, _) | Mutation::SetDefault(path, _) | Mutation::Remove(path) => path,
        }
    }

    /// Applies the change to `object` and returns how to take it back; `Err`, with the
    /// object untouched, when the path runs through something that is not a map.
    pub fn apply(&self, object: &mut Value) -> Result<Undo, String> {
        let undo = Undo::before(object, self.path(), matches!(self, Mutation::Remove(_)))?;
        match self {
            Mutation::Set(path, value) => *slot(object, path) = value.clone(),
            Mutation::SetDefault(path, value) => {
                let target = slot(object, path);
                if target.is_null() {
                    *target = value.clone();
                }
            }
            Mutation::Remove(path) => {
                if let Some((last, parents)) = path.split_last()
                    && let Some(map) = get_mut(object, parents).and_then(Value::as_object_mut)
                {
                    map.remove(last);
                }
            }
        }
        Ok(undo)
    }

    /// Takes back what [`Mutation::apply`] did: the object is as the mutation found it.
    pub fn undo(&self, undo: Undo, object: &mut Value) {
        let Some((last, parents)) = self.path()[..undo.depth].split_last() else {
            *object = undo.previous.unwrap_or_default();
            return;
        };
        let Some(map) = get_mut(object, parents).and_then(Value::as_object_mut) else { return };
        match undo.previous {
            Some(previous) => {
                map.insert(last.clone(), previous);
            }
            None => {
                map.remove(last);
            }
        }
    }
}

/// The first place a mutation changes, as a number of members along its path, and what
/// was there, so that the mutations of a policy can be taken back when a later one fails
/// without copying the whole object.
#[derive(Debug)]
pub struct Undo {
    depth: usize,
    /// `None` when the key was absent.
    previous: Option<Value>,
}

impl Undo {
    /// Checks that a mutation at `path` can be made and records what it will change: the
    /// first null it turns into a map, the first key it adds, or else the value it replaces.
    fn before(object: &Value, path: &[String], remove: bool) -> Result<Undo, String> {
        let mut current = object;
        for (i, name) in path.iter().enumerate() {
            match current {
                Value::Object(map) => match map.get(name) {
                    Some(next) => current = next,
                    None => return Ok(Undo { depth: i + 1, previous: None }),
                },
                // A removal below something that is not a map has nothing to remove.
                _ if remove => return Ok(Undo { depth: path.len(), previous: None }),
                Value::Null => return Ok(Undo { depth: i, previous: Some(Value::Null) }),
                other => {
                    return Err(format!("cannot set {name:?}: the value above it is {}, not a map", type_name(other)));
                }
            }
        }
        Ok(Undo { depth: path.len(), previous: Some(current.clone()) })
    }
}

fn get_mut<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(object, |current, name| current.get_mut(name))
}

/// Refuses `match` and `search` with a literal pattern that is not a regular expression:
/// the engine takes the query and evaluates such a call to false (RFC 9535 asks for
/// exactly that), so a policy built on one would pass or fail every request without a
/// word. (The grammar already refuses unknown function names and wrong argument counts.)
fn check_patterns(segments: &[Segment]) -> Result<(), String> {
    fn segment(s: &Segment) -> Result<(), String> {
        match s {
            Segment::Descendant(inner) => segment(inner),
            Segment::Selector(one) => selector(one),
            Segment::Selectors(many) => many.iter().try_for_each(selector),
        }
    }
    fn selector(s: &Selector) -> Result<(), String> {
        match s {
            Selector::Filter(f) => filter(f),
            Selector::Name(_) | Selector::Wildcard | Selector::Index(_) | Selector::Slice(..) => Ok(()),
        }
    }
    fn filter(f: &Filter) -> Result<(), String> {
        match f {
            Filter::Or(items) | Filter::And(items) => items.iter().try_for_each(filter),
            Filter::Atom(FilterAtom::Filter { expr, .. }) => filter(expr),
            Filter::Atom(FilterAtom::Test { expr, .. }) => test(expr),
            Filter::Atom(FilterAtom::Comparison(comparison)) => {
                let (left, right) = comparison.vals();
                [left, right].into_iter().try_for_each(|side| match side {
                    Comparable::Function(f) => function(f),
                    Comparable::Literal(_) | Comparable::SingularQuery(_) => Ok(()),
                })
            }
        }
    }
    fn test(t: &FilterTest) -> Result<(), String> {
        match t {
            FilterTest::RelQuery(segments) => segments.iter().try_for_each(segment),
            FilterTest::AbsQuery(query) => query.segments.iter().try_for_each(segment),
            FilterTest::Function(f) => function(f),
        }
    }
    fn argument(a: &FnArg) -> Result<(), String> {
        match a {
            FnArg::Literal(_) => Ok(()),
            FnArg::Test(t) => test(t),
            FnArg::Filter(f) => filter(f),
        }
    }
    fn function(f: &TestFunction) -> Result<(), String> {
        match f {
            TestFunction::Custom(_, args) => args.iter().try_for_each(argument),
            TestFunction::Match(subject, pattern) | TestFunction::Search(subject, pattern) => {
                if let FnArg::Literal(Literal::String(pattern)) = pattern {
                    Regex::new(pattern)
                        .map_err(|e| format!("the pattern {pattern:?} is not a regular expression: {e}"))?;
                }
                argument(subject).and(argument(pattern))
            }
            TestFunction::Length(a) => argument(a),
            TestFunction::Value(a) | TestFunction::Count(a) => argument(a),
        }
    }
    segments.iter().try_for_each(segment)
}

/// The member names of a query made of name selectors only, like `$.a.b['c/d']`.
fn plain_members(query: &JpQuery) -> Option<Vec<String>> {
    query
        .segments
        .iter()
        .map(|segment| match segment {
            Segment::Selector(Selector::Name(name)) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn map_entries(map: &str, entries: &std::collections::BTreeMap<String, String>) -> Vec<Mutation> {
    entries
        .iter()
        .map(|(k, v)| Mutation::Set(vec!["metadata".into(), map.into(), k.clone()], Value::String(v.clone())))
        .collect()
}

/// The member names of `$.object.a['b/c']`, refusing wildcards, indexes and filters: a
/// mutation must name one place.
fn member_path(text: &str) -> Result<Vec<String>, String> {
    let query = parse_json_path(text).map_err(|e| format!("JSONPath {text:?} does not parse: {e}"))?;
    let names = plain_members(&query).ok_or_else(|| {
        format!("{text:?}: a mutation path names members only, like $.object.metadata.labels['team']")
    })?;
    match names.split_first() {
        Some((first, rest)) if first == "object" && !rest.is_empty() => Ok(rest.to_vec()),
        _ => Err(format!("{text:?}: a mutation path starts with $.object and names a field below it")),
    }
}

/// The value at `path`, made by turning nulls and absent keys on the way into maps; the
/// caller has checked ([`Undo::before`]) that nothing on the way is anything else.
fn slot<'a>(object: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(object, |current, name| {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        match current {
            Value::Object(map) => map.entry(name.clone()).or_insert(Value::Null),
            // Not reached: a map was made above.
            other => other,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(spec: Value) -> Condition {
        Condition::compile(&serde_json::from_value(spec).unwrap(), "validate[0]").unwrap()
    }

    fn compile_error(spec: Value) -> String {
        Condition::compile(&serde_json::from_value(spec).unwrap(), "validate[0]").unwrap_err()
    }

    fn fails(c: &Condition, doc: &Value) -> String {
        match c.eval(doc).unwrap() {
            Eval::Fail(message) => message,
            Eval::Pass => panic!("expected a failure"),
        }
    }

    #[test]
    fn each_operator() {
        let doc = json!({"s": "Team-a", "n": 5, "l": ["x", "y"], "z": null});
        let pass = |spec: Value| assert_eq!(condition(spec.clone()).eval(&doc).unwrap(), Eval::Pass, "{spec}");
        let fail = |spec: Value, text: &str| {
            let message = fails(&condition(spec), &doc);
            assert!(message.contains(text), "{message} should contain {text}");
        };
        pass(json!({"path": "$.s", "required": true}));
        fail(json!({"path": "$.missing", "required": true}), "$.missing is required");
        fail(json!({"path": "$.z", "required": true}), "is required");
        pass(json!({"path": "$.missing", "forbidden": true}));
        fail(json!({"path": "$.s", "forbidden": true}), "must not be set, but is \"Team-a\"");
        pass(json!({"path": "$.n", "equals": 5}));
        fail(json!({"path": "$.n", "equals": 6}), "$.n is 5, not 6");
        pass(json!({"path": "$.s", "oneOf": ["Team-a", "b"]}));
        fail(json!({"path": "$.s", "oneOf": ["b"]}), "allowed: \"b\"");
        fail(json!({"path": "$.s", "notOneOf": ["Team-a"]}), "must not be \"Team-a\"");
        pass(json!({"path": "$.s", "pattern": "^Team-"}));
        fail(json!({"path": "$.s", "pattern": "^team-"}), "does not match ^team-");
        pass(json!({"path": "$.l", "minLength": 2, "maxLength": 2}));
        fail(json!({"path": "$.s", "maxLength": 3}), "has length 6, more than 3");
        fail(json!({"path": "$.l", "minLength": 3}), "has length 2, less than 3");
        pass(json!({"path": "$.n", "minimum": 5, "maximum": 5}));
        fail(json!({"path": "$.n", "maximum": 4}), "$.n is 5, more than 4");
        fail(json!({"path": "$.n", "minimum": 6}), "less than 6");
        pass(json!({"path": "$.l[*]", "oneOf": ["x", "y"]}));
        // Absent values pass every check but required.
        pass(json!({"path": "$.missing", "pattern": "^x$"}));
    }

    #[test]
    fn combinators_and_messages() {
        let doc = json!({"a": "x", "b": "y"});
        let any = condition(json!({"any": [{"path": "$.a", "equals": "no"}, {"path": "$.b", "equals": "y"}]}));
        assert_eq!(any.eval(&doc).unwrap(), Eval::Pass);
        let none = condition(json!({"any": [{"path": "$.a", "equals": "1"}, {"path": "$.b", "equals": "2"}]}));
        assert!(fails(&none, &doc).starts_with("none of these holds: $.a is \"x\", not \"1\"; $.b"));
        let all = condition(
            json!({"all": [{"path": "$.a", "equals": "x"}, {"path": "$.b", "equals": "z"}], "message": "a and b"}),
        );
        assert_eq!(fails(&all, &doc), "a and b");
        let not = condition(json!({"not": {"path": "$.a", "equals": "x"}, "message": "a must not be x"}));
        assert_eq!(fails(&not, &doc), "a must not be x");
        let templated = condition(json!({"path": "$.a", "pattern": "^y", "message": "{{path}} was {{value}}"}));
        assert_eq!(fails(&templated, &doc), "$.a was \"x\"");
    }

    #[test]
    fn type_mismatches_are_evaluation_errors() {
        let doc = json!({"n": 5, "s": "x"});
        let err = condition(json!({"path": "$.n", "pattern": "x"})).eval(&doc).unwrap_err();
        assert!(err.contains("$.n is a number, and a pattern applies only to strings"), "{err}");
        assert!(condition(json!({"path": "$.s", "minimum": 1})).eval(&doc).is_err());
        assert!(condition(json!({"path": "$.n", "maxLength": 1})).eval(&doc).is_err());
        // An error inside any, with nothing passing, is an error, not a failure.
        let any = condition(json!({"any": [{"path": "$.n", "pattern": "x"}, {"path": "$.s", "equals": "y"}]}));
        assert!(any.eval(&doc).is_err());
    }

    #[test]
    fn compile_errors_point_at_the_node() {
        assert!(compile_error(json!({"path": "$.a["})).contains("validate[0]"));
        assert!(compile_error(json!({"path": "$.a[", "required": true})).contains("does not parse"));
        assert!(
            compile_error(json!({"path": "$.a", "pattern": "("}))
                .contains("validate[0].pattern \"(\" is not a regular expression")
        );
        assert!(
            compile_error(json!({"all": [], "required": true})).contains("validate[0].all: must list at least one")
        );
        assert!(
            compile_error(json!({"any": [{"path": "$.a"}]}))
                .contains("validate[0].any[0]: path \"$.a\" has nothing to check")
        );
        assert!(
            compile_error(json!({"path": "$.a", "all": [{"path": "$.b", "required": true}]})).contains("exactly one")
        );
        assert!(
            compile_error(json!({"not": {"path": "$.b", "required": true}, "required": true}))
                .contains("beside a path")
        );
    }

    #[test]
    fn filter_patterns_that_are_not_regular_expressions_are_refused() {
        let document = json!({"groups": ["system:masters", "developers"], "allowed": ["developers"]});
        let engine = |text: &str| js_path_process(&parse_json_path(text).unwrap(), &document).unwrap().len();
        for (text, as_if_false) in [
            ("$.groups[?match(@, '(system')]", 0),
            ("$.groups[?search(@, 'x{99999999}')]", 0),
            // Nested in a logical expression: under a not, the broken call selects everything.
            ("$.groups[?@ == 'a' || !(length(@) > 1 && search(@, '['))]", 2),
            ("$.groups[?!match(@, 'a{2,1}')]", 2),
            ("$..[?in(@, $.allowed) && match(@, '?')]", 0),
        ] {
            // The premise: the engine takes the query and treats the call as false, silently.
            assert_eq!(engine(text), as_if_false, "{text}");
            let error = Path::compile(text).unwrap_err();
            assert!(error.starts_with(&format!("JSONPath {text:?}: the pattern ")), "{text}: {error}");
            assert!(error.contains("is not a regular expression"), "{text}: {error}");
        }
        // Patterns that are, and patterns read from the document, which only the request has.
        for (text, selected) in [
            ("$.groups[?search(@, '^system:')]", 1),
            ("$.groups[?match(@, 'dev.*')]", 1),
            ("$.groups[?in(@, $.allowed) && match(@, '[a-z]+')]", 1),
            ("$.groups[?match(@, $.allowed[0])]", 1),
        ] {
            assert_eq!(Path::compile(text).unwrap().select(&document).unwrap().len(), selected, "{text}");
        }
    }

    #[test]
    fn member_paths_select_what_the_query_engine_selects() {
        let document = json!({"object": {"metadata": {"labels": {"app": "x", "a.b/c": "y", "n": null}},
            "spec": {"list": [1, 2], "s": "text"}}, "top": 1});
        let paths = [
            "$.object.metadata.labels['app']",
            "$.object.metadata.labels['a.b/c']",
            "$.object.metadata.labels.n",
            "$.object.metadata.labels.missing",
            "$.object.spec.list",
            "$.object.spec.list.x",
            "$.object.spec.s.x",
            "$['top']",
            "$",
        ];
        for text in paths {
            let path = Path::compile(text).unwrap();
            assert!(path.members.is_some(), "{text} names members only");
            let engine: Vec<&Value> =
                js_path_process(&path.query, &document).unwrap().into_iter().map(|r| r.val()).collect();
            assert_eq!(path.select(&document).unwrap(), engine, "{text}");
        }
        assert!(Path::compile("$.object.spec.list[0]").unwrap().members.is_none());
        let reads = |text: &str, name: &str| Path::compile(text).unwrap().may_read(name);
        assert!(reads("$.class.releasePolicy", "class") && !reads("$.class.releasePolicy", "content"));
        assert!(reads("$['content'].spec", "content"));
        assert!(reads("$..releasePolicy", "class") && reads("$.*.spec", "content"), "may reach any member");
        assert!(Path::compile("$..app").unwrap().members.is_none());
    }

    #[test]
    fn undo_puts_back_exactly_what_a_mutation_changed() {
        let compile = |spec: Value| Mutation::compile(&serde_json::from_value(spec).unwrap(), "mutate[0]").unwrap();
        let original =
            json!({"metadata": {"name": "b", "labels": null, "annotations": {"a": "1"}}, "spec": {"keep": 1}});
        for spec in [
            json!({"set": {"path": "$.object.metadata.labels['x']", "value": "null became a map"}}),
            json!({"set": {"path": "$.object.metadata.annotations['b']", "value": "a new key"}}),
            json!({"set": {"path": "$.object.spec.keep", "value": 2}}),
            json!({"setDefault": {"path": "$.object.spec.keep", "value": 3}}),
            json!({"set": {"path": "$.object.spec.new.deep.x", "value": "a chain of new maps"}}),
            json!({"remove": {"path": "$.object.spec.keep"}}),
            json!({"remove": {"path": "$.object.spec.none.x"}}),
            json!({"remove": {"path": "$.object.metadata.name.x"}}),
        ] {
            let mut object = original.clone();
            let mutations = compile(spec.clone());
            let undo: Vec<Undo> = mutations.iter().map(|m| m.apply(&mut object).unwrap()).collect();
            mutations.iter().zip(undo).rev().for_each(|(m, u)| m.undo(u, &mut object));
            assert_eq!(object, original, "{spec}");
        }
        let mut object = original.clone();
        let through_a_string = compile(json!({"set": {"path": "$.object.metadata.name.x", "value": 1}}));
        let err = through_a_string[0].apply(&mut object).unwrap_err();
        assert_eq!(err, "cannot set \"x\": the value above it is a string, not a map");
        assert_eq!(object, original, "a refused mutation changes nothing");
    }

    #[test]
    fn mutations_set_default_add_and_remove() {
        let compile = |spec: Value| Mutation::compile(&serde_json::from_value(spec).unwrap(), "mutate[0]");
        let mut object = json!({"metadata": {"name": "b"}, "spec": {"keep": 1, "drop": 2}});
        for spec in [
            json!({"set": {"path": "$.object.spec.tier", "value": "gold"}}),
            json!({"setDefault": {"path": "$.object.spec.keep", "value": 9}}),
            json!({"setDefault": {"path": "$.object.metadata.labels['cost-center']", "value": "shared"}}),
            json!({"addAnnotations": {"example.com/owner": "team-a"}}),
            json!({"remove": {"path": "$.object.spec.drop"}}),
            json!({"remove": {"path": "$.object.spec.never.there"}}),
        ] {
            for mutation in compile(spec).unwrap() {
                mutation.apply(&mut object).unwrap();
            }
        }
        assert_eq!(
            object,
            json!({"metadata": {"name": "b", "labels": {"cost-center": "shared"}, "annotations": {"example.com/owner": "team-a"}},
                   "spec": {"keep": 1, "tier": "gold"}})
        );
        let into_string = compile(json!({"set": {"path": "$.object.metadata.name.x", "value": 1}})).unwrap();
        assert!(into_string[0].apply(&mut object).is_err());
        for bad in ["$.spec.x", "$.object", "$.object.a[0]", "$.object.*", "$..a"] {
            let err = compile(json!({"set": {"path": bad, "value": 1}})).unwrap_err();
            assert!(err.starts_with("mutate[0]: "), "{bad}: {err}");
        }
        assert!(compile(json!({})).unwrap_err().contains("exactly one of set"));
    }
}
