#!/usr/bin/env bash
# Build the pinned control-plane binaries that tests/k8senv runs: etcd, one multi-call
# kube binary (kube-apiserver, kube-controller-manager, kube-scheduler) and kwok.
#
# Why a script of our own: no Docker here (no kind/k3d), and `go install
# k8s.io/kubernetes/cmd/...@vX` does not work (k8s.io/kubernetes pins its staging modules
# to v0.0.0 through replace directives that a dependent module ignores). So we generate a
# wrapper module whose replace list comes from that release's own go.mod.
#
# Output: ${K8SENV_CACHE:-$HOME/.cache/jobferry/k8s}/<key>/bin/, outside the work
# tree and keyed by version; a stamp file makes a second run a no-op.
#
# Usage:
#   .ci/build-k8s.sh                  build if needed (idempotent)
#   .ci/build-k8s.sh --print-bin-dir  print the bin dir for the pinned versions; build nothing
#   .ci/build-k8s.sh --check          exit 0 if the binaries are built, 1 if not
set -euo pipefail

# Pinned versions: the only place they are written down (tests/k8senv asks this script).
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

CACHE_ROOT=${K8SENV_CACHE:-$HOME/.cache/jobferry/k8s}
KEY="${K8S_VERSION#v}-etcd${ETCD_VERSION#v}-kwok${KWOK_VERSION#v}"
OUT_DIR="$CACHE_ROOT/$KEY"
BIN_DIR="$OUT_DIR/bin"
STAMP="$OUT_DIR/stamp"

case "${1:-}" in
  --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
  --check) [[ -f "$STAMP" ]]; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--print-bin-dir|--check]" >&2; exit 2 ;;
esac

if [[ -f "$STAMP" ]]; then
  echo "k8s test binaries up to date: $BIN_DIR"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "error: go not found on PATH (needed to build $KEY)" >&2
    exit 1
  fi
fi

# Server binaries are built static, as upstream does; keep the default GOCACHE/GOMODCACHE.
export CGO_ENABLED=0 GOWORK=off
GO_BUILD_FLAGS=(-trimpath)
START=$(date +%s)

mkdir -p "$BIN_DIR" "$OUT_DIR/src"
# One build at a time per cache key (the test harness may call us concurrently with CI).
exec 9>"$OUT_DIR/.lock"
flock 9
if [[ -f "$STAMP" ]]; then
  echo "k8s test binaries up to date (built by a concurrent run): $BIN_DIR"
  exit 0
fi

log() { echo "[build-k8s $(( $(date +%s) - START ))s] $*"; }

build_etcd() {
  [[ -x "$BIN_DIR/etcd" ]] && { log "etcd already built"; return; }
  local src="$OUT_DIR/src/etcd"
  mkdir -p "$src"
  log "building etcd $ETCD_VERSION"
  # go.etcd.io/etcd/server/v3 has replace directives (so no `go install pkg@v`) and its
  # main package is the module root: a wrapper module that requires it builds it.
  cat >"$src/go.mod" <<EOF
module jobferry.local/etcdbuild

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$src/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  (cd "$src" && go mod tidy && \
    go build "${GO_BUILD_FLAGS[@]}" -ldflags="-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  log "etcd done"
}

# Print a replace block mapping every k8s.io/<staging> v0.0.0 requirement of the release's
# go.mod to the matching published v0.Y.Z tag.
staging_replaces() {
  local release_mod=$1 staging_version=$2
  echo "replace ("
  awk -v v="$staging_version" '
    /^require[ \t]*\(/ { inreq = 1; next }
    inreq && /^\)/     { inreq = 0; next }
    inreq && $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { printf "\t%s => %s %s\n", $1, $1, v }
  ' "$release_mod"
  echo ")"
}

build_kube() {
  [[ -x "$BIN_DIR/kube" ]] && { log "kube already built"; return; }
  local src="$OUT_DIR/src/kube" major minor patch staging
  IFS=. read -r major minor patch <<<"${K8S_VERSION#v}"
  staging="v0.${minor}.${patch}"  # k8s.io/kubernetes v1.Y.Z <-> staging modules v0.Y.Z
  mkdir -p "$src"
  log "building kube $K8S_VERSION (apiserver, controller-manager, scheduler; staging $staging)"
  local release_mod
  release_mod=$(cd "$OUT_DIR/src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$release_mod" ]] || { echo "error: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  {
    echo "module jobferry.local/kubebuild"
    echo
    grep -m1 '^go ' "$release_mod"
    grep '^godebug ' "$release_mod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    staging_replaces "$release_mod" "$staging"
  } >"$src/go.mod"
  cat >"$src/main.go" <<'EOF'
// Command kube is a multi-call binary (like the old hyperkube): invoked as kube-apiserver,
// kube-controller-manager or kube-scheduler (symlinks), or as `kube <component> ...`.
// Linking once instead of three times halves a cold build.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // CronJob time zones, as upstream mains do

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	name := filepath.Base(os.Args[0])
	if name == "kube" {
		if len(os.Args) < 2 {
			fmt.Fprintln(os.Stderr, "usage: kube apiserver|controller-manager|scheduler [flags]")
			os.Exit(2)
		}
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	var command *cobra.Command
	switch strings.TrimPrefix(name, "kube-") {
	case "apiserver":
		command = apiserver.NewAPIServerCommand()
	case "controller-manager":
		command = controllermanager.NewControllerManagerCommand()
	case "scheduler":
		command = scheduler.NewSchedulerCommand()
	default:
		fmt.Fprintf(os.Stderr, "kube: unknown component %q\n", name)
		os.Exit(2)
	}
	os.Exit(cli.Run(command))
}
EOF
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  (cd "$src" && go mod tidy && \
    go build "${GO_BUILD_FLAGS[@]}" -ldflags="$ldflags" -o "$BIN_DIR/kube.tmp" .)
  mv "$BIN_DIR/kube.tmp" "$BIN_DIR/kube"
  log "kube done"
}

build_kwok() {
  [[ -x "$BIN_DIR/kwok" ]] && { log "kwok already built"; return; }
  log "building kwok $KWOK_VERSION"
  # kwok's go.mod has no replace directives, so `go install pkg@version` works.
  local gobin="$OUT_DIR/src/kwok-bin"
  mkdir -p "$gobin"
  (cd "$OUT_DIR/src" && GOBIN="$gobin" go install "${GO_BUILD_FLAGS[@]}" \
    -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
  mv "$gobin/kwok" "$BIN_DIR/kwok"
  log "kwok done"
}

build_etcd
build_kwok
build_kube
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  ln -sf kube "$BIN_DIR/$c"
done

"$BIN_DIR/kube-apiserver" --version
"$BIN_DIR/etcd" --version | head -1
"$BIN_DIR/kwok" --version 2>/dev/null | head -1 || true

ELAPSED=$(( $(date +%s) - START ))
{
  echo "k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION"
  echo "go=$(go env GOVERSION)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$ELAPSED"
} >"$STAMP"
log "all built into $BIN_DIR in ${ELAPSED}s"
