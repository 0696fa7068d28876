# mirrorfs — run `make help` for the targets.
# The version a user quotes: the latest v-tag as semver (1.2.0, or
# 1.2.0-3-gHASH past it), else 0.0.0-dev+HASH; .dirty/-dirty for local changes.
VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null) && echo "$$v" | sed 's/^v//' || \
	{ h=$$(git rev-parse --short=12 HEAD 2>/dev/null) && echo "0.0.0-dev+$$h$$(git diff --quiet HEAD 2>/dev/null || echo .dirty)"; } || \
	echo 0.0.0-dev)
LDFLAGS := -X mirrorfs/daemon.Version=$(VERSION)
GO      ?= go

.DEFAULT_GOAL := build

.PHONY: help
help: ## list the targets
	@grep -E '^[A-Za-z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# What the binary is made of: it is rebuilt only when one of these is newer,
# so that `sudo make install` works where root has no Go.
SOURCES := $(shell find . -path ./bench -prune -o -path ./e2e -prune -o -type f \
	\( -name '*.go' -o -name '*.c' -o -name '*.h' -o -name '*.txt' \) -print 2>/dev/null) $(wildcard go.mod go.sum)

.PHONY: build
build: mirrorfs ## build ./mirrorfs (when a source is newer than it)

mirrorfs: $(SOURCES)
	CGO_ENABLED=1 $(GO) build -ldflags '$(LDFLAGS)' -o mirrorfs .

.PHONY: man
man: mirrorfs.8 ## mirrorfs(8), made from the --help text (check it: man -l mirrorfs.8)

mirrorfs.8: mirrorfs
	./mirrorfs --man > $@.tmp && mv $@.tmp $@

.PHONY: test
# The e2e tests that run again against a daemon built with -race; a race
# report lands in the daemon's log, which the tests check. Each name must
# be a test's (or a prefix of test names): `make race` fails on one that
# matches none, so a rename cannot silently run nothing.
RACE_TESTS ?= TestStopSignals|TestSIGHUPStorm|TestExternalUnmount|TestAutoRemount|TestDifferential|TestPolicyHide

test: deps lint ## lint, unit, fuzz (briefly) and end-to-end tests (needs root and /dev/fuse)
	$(GO) test -count=1 -timeout 15m ./...
	$(MAKE) --no-print-directory race
	$(MAKE) --no-print-directory fuzz FUZZTIME=30000x

.PHONY: race
race: ## the RACE_TESTS e2e tests against a daemon built with -race
	@tests=$$($(GO) test -list . ./e2e/) || exit 1; \
	for t in $$(echo '$(RACE_TESTS)' | tr '|' ' '); do \
		echo "$$tests" | grep -q "^$$t" || { echo "RACE_TESTS: $$t matches no test in ./e2e/" >&2; exit 1; }; \
	done
	MIRRORFS_RACE=1 $(GO) test -count=1 -timeout 10m -run '^($(RACE_TESTS))' ./e2e/

FUZZTIME ?= 1m

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (a duration, or Nx runs; seeds: f.Add and testdata/fuzz)
	$(GO) test -run '^$$' -fuzz '^FuzzGate$$' -fuzztime $(FUZZTIME) ./daemon/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMountinfo$$' -fuzztime $(FUZZTIME) ./mounts/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzHidden$$' -fuzztime $(FUZZTIME) ./policy/

.PHONY: unit
unit: ## unit tests only (no FUSE needed)
	$(GO) test -count=1 ./daemon/ ./fs/ ./mounts/ ./policy/

.PHONY: e2e
e2e: ## end-to-end tests only
	$(GO) test -count=1 -timeout 15m -v ./e2e/

ROUNDS ?= 50
# Takeovers TestTortureTakeover makes (with a fault after every third).
TAKEOVER_ROUNDS ?= 200
DIFF_OPS ?= 20000
# Which tests make torture runs: e.g. TORTURE_RUN=TestTortureKill9 ROUNDS=200.
TORTURE_RUN ?= Torture|Differential

.PHONY: torture
torture: ## lifecycle faults ROUNDS times each (kill -9 at random moments among them), differential test with DIFF_OPS per worker
	MIRRORFS_TORTURE_ROUNDS=$(ROUNDS) MIRRORFS_TAKEOVER_ROUNDS=$(TAKEOVER_ROUNDS) MIRRORFS_DIFF_OPS=$(DIFF_OPS) $(GO) test -count=1 -timeout 0 -v \
		-run '$(TORTURE_RUN)' ./e2e/ 2>&1 | tee torture.log | grep -E '^(---|===|ok|FAIL|PASS)|torture:|differential:'

BENCH_ROUNDS ?= 3
BENCH_FLAGS ?=

.PHONY: bench
bench: build ## mirrorfs side by side with the plain folder and bindfs (installs fio, bindfs)
	@command -v fio >/dev/null && command -v bindfs >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio bindfs >/dev/null; }
	$(GO) run ./bench -rounds $(BENCH_ROUNDS) -mirrorfs ./mirrorfs -out bench/results/last.md $(BENCH_FLAGS)

.PHONY: bench-takeover
bench-takeover: build ## bench's takeover part alone: client stalls and time to ready, takeover vs stop + start
	$(GO) run ./bench -rounds $(BENCH_ROUNDS) -mirrorfs ./mirrorfs -only takeover -out bench/results/last.md $(BENCH_FLAGS)

.PHONY: demo
demo: build ## mount a demo mirror of ./demo/src at ./demo/mnt
	mkdir -p demo/src demo/mnt
	echo "hello from mirrorfs" > demo/src/hello.txt
	./mirrorfs --pidfile demo/mirrorfs.pid --log demo/mirrorfs.log demo/src demo/mnt
	@echo "try: cat demo/mnt/hello.txt; stop: kill \$$(cat demo/mirrorfs.pid)"

.PHONY: deps
deps: ## install the Debian packages the tests need, if missing (scripts/test-deps)
	scripts/test-deps

.PHONY: lint
lint: ## gofmt, go vet, shellcheck
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	$(GO) vet ./...
	shellcheck scripts/mirrorfs-ctl scripts/test-deps .ci/run
	shellcheck -s bash scripts/completion/mirrorfs-ctl.bash

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/mirrorfs
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR    ?= /etc/systemd/system
UNITS      := mirrorfs@.service mirrorfs-forking@.service
EXAMPLES   := $(wildcard scripts/examples/*)

.PHONY: install
install: mirrorfs mirrorfs.8 ## install under DESTDIR/PREFIX (default /usr/local): binary, wrapper, units, man page, completion, examples
	install -D -m 0755 mirrorfs $(DESTDIR)$(BINDIR)/mirrorfs
	@case ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" in *":$(BINDIR):"*) ;; \
	*) echo "note: mount(8) finds helpers on its own PATH only; for fstab mounts: ln -s $(BINDIR)/mirrorfs /usr/local/bin/" ;; esac
	install -D -m 0755 scripts/mirrorfs-ctl $(DESTDIR)$(SBINDIR)/mirrorfs-ctl
	install -D -m 0644 mirrorfs.8 $(DESTDIR)$(MANDIR)/man8/mirrorfs.8
	install -D -m 0644 scripts/completion/mirrorfs-ctl.bash $(DESTDIR)$(COMPLETIONDIR)/mirrorfs-ctl
	install -d $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(UNITDIR)
	install -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/
	for u in $(UNITS); do \
		sed 's|/usr/local/bin/mirrorfs|$(BINDIR)/mirrorfs|' scripts/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done

.PHONY: uninstall
uninstall: ## remove what install put under DESTDIR/PREFIX
	rm -f $(DESTDIR)$(BINDIR)/mirrorfs $(DESTDIR)$(SBINDIR)/mirrorfs-ctl $(DESTDIR)$(MANDIR)/man8/mirrorfs.8 \
		$(DESTDIR)$(COMPLETIONDIR)/mirrorfs-ctl $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
		$(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(notdir $(EXAMPLES)))
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null

.PHONY: clean
clean: ## remove build output
	rm -f mirrorfs mirrorfs.race mirrorfs.8
