module mirrorfs

go 1.26.8

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sys v0.49.0
)

require github.com/pelletier/go-toml/v2 v2.4.3
