package daemon

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set at build time (the Makefile: the latest v-tag as semver,
// or 0.0.0-dev+HASH); "dev" means a plain go build, whose version is taken
// from the revision Go recorded in the binary.
var Version = "dev"

const goFuseModule = "github.com/hanwen/go-fuse/v2"

// versionText is --version: what a user quotes in a report, with the
// versions of go-fuse and Go the binary was built with.
func versionText() string {
	info, _ := debug.ReadBuildInfo()
	return fmt.Sprintf("mirrorfs %s\ngo-fuse %s\n%s %s/%s\n",
		quotedVersion(Version, info), depVersion(info, goFuseModule), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// shortVersion is mirrorfs's version alone, as --version's first line says it.
func shortVersion() string {
	info, _ := debug.ReadBuildInfo()
	return quotedVersion(Version, info)
}

// quotedVersion is v, or for "dev" 0.0.0-dev+REVISION (.dirty when the
// tree had changes), in the form of a semver pre-release.
func quotedVersion(v string, info *debug.BuildInfo) string {
	if v != "dev" {
		return v
	}
	var rev, dirty string
	if info != nil {
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && len(s.Value) >= 12:
				rev = s.Value[:12]
			case s.Key == "vcs.modified" && s.Value == "true":
				dirty = ".dirty"
			}
		}
	}
	if rev == "" {
		return "0.0.0-dev"
	}
	return "0.0.0-dev+" + rev + dirty
}

// depVersion is the version of module path the binary was built with.
func depVersion(info *debug.BuildInfo, path string) string {
	if info == nil {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path != path {
			continue
		}
		if d.Replace != nil {
			return d.Replace.Version + " (replaces " + d.Version + ")"
		}
		return d.Version
	}
	return "unknown"
}
