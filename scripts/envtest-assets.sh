#!/usr/bin/env bash
# Prints a directory holding `kube-apiserver` and `etcd` for the end-to-end suite
# (tests/envtest.rs, the envtest convention: KUBEBUILDER_ASSETS), making it when needed.
#
# No registry this project may use carries a kube-apiserver binary. Debian's archive
# carries Kubernetes' source: the `kubernetes` source package of bookworm (1.20.2, with
# every dependency vendored), from which Debian builds only kubectl. This builds
# kube-apiserver from it with Debian's Go, and takes etcd from Debian's etcd-server.
# Two changes to the source, both outside Kubernetes' own code:
# - vendor/github.com/modern-go/reflect2 1.0.1 is replaced by Debian's 1.0.2: 1.0.1 reads
#   Go's map internals, which changed in Go 1.18, and the API server built with Debian's
#   Go 1.19 crashed (fatal error: fault, in mapiterinit) on its first CRD;
# - nothing else: `make WHAT=cmd/kube-apiserver`, as Debian's rules build kubectl.
# The build takes about five minutes on two cores; the result is kept in target/ and
# reused. Usage: KUBEBUILDER_ASSETS="$(bash scripts/envtest-assets.sh)".
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.20.5+really1.20.2
orig="kubernetes_${version}.orig.tar.gz"
orig_sha256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
pool=http://deb.debian.org/debian/pool/main/k/kubernetes
assets="$PWD/target/envtest-${version#*really}"

if [ -x "$assets/kube-apiserver" ] && [ -x "$assets/etcd" ]; then
  echo "$assets"
  exit 0
fi

# Everything below reports to stderr: stdout is the directory alone.
{
  packages=(golang-go golang-github-modern-go-reflect2-dev etcd-server rsync jq curl make)
  missing=()
  for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  curl -sSf -o "$work/$orig" "$pool/$orig"
  echo "$orig_sha256  $work/$orig" | sha256sum -c --quiet
  tar xzf "$work/$orig" -C "$work"
  source_dir="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*')"
  rm -rf "$source_dir/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$source_dir/vendor/github.com/modern-go/reflect2"
  # Kubernetes 1.20 builds in GOPATH mode, from a GOPATH that holds the tree as k8s.io/kubernetes.
  mkdir -p "$source_dir/.go/src/k8s.io"
  ln -s ../../.. "$source_dir/.go/src/k8s.io/kubernetes"
  echo "scripts/envtest-assets.sh: building kube-apiserver ${version#*really} from Debian's source package (about five minutes)"
  (cd "$source_dir" && env GOPATH="$source_dir/.go" GOCACHE="$work/gocache" HOME="$work" CGO_ENABLED=0 \
    make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1) || { tail -40 "$work/build.log"; exit 1; }
  mkdir -p "$assets"
  cp "$source_dir/_output/local/bin/linux/$(go env GOARCH)/kube-apiserver" "$assets/kube-apiserver"
  ln -sf "$(command -v etcd)" "$assets/etcd"
} >&2
echo "$assets"
