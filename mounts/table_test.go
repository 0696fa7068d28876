package mounts

import (
	"strings"
	"testing"
)

const sampleMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:32 / /tmp/my\040mnt rw,nosuid,nodev,relatime shared:20 - fuse.mirrorfs /srv/a\134b rw,user_id=0,group_id=0
37 36 0:33 / /tmp/my\040mnt rw,relatime - tmpfs tmpfs rw
40 22 0:34 / /run/user rw - tmpfs none rw
`

func TestParseMountinfo(t *testing.T) {
	mounts, err := Parse(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 4 {
		t.Fatalf("got %d mounts, want 4", len(mounts))
	}
	want := Mount{ID: 36, Parent: 22, Dev: "0:32", Mountpoint: "/tmp/my mnt", FSType: "fuse.mirrorfs", Source: `/srv/a\b`}
	if mounts[1] != want {
		t.Errorf("mounts[1] = %+v, want %+v", mounts[1], want)
	}
	top, ok := TopAt(mounts, "/tmp/my mnt")
	if !ok || top.ID != 37 || top.FSType != "tmpfs" {
		t.Errorf("TopAt = %+v, %v; want the tmpfs stacked on top (id 37)", top, ok)
	}
	if _, ok := TopAt(mounts, "/tmp/my"); ok {
		t.Error("TopAt matched a prefix of a mountpoint")
	}
	run := Mount{ID: 40, Dev: "0:34", Mountpoint: "/run/user"}
	if !Has(mounts, run) || Has(mounts, Mount{ID: 41, Dev: "0:34", Mountpoint: "/run/user"}) ||
		Has(mounts, Mount{ID: 40, Dev: "0:99", Mountpoint: "/run/user"}) || Has(mounts, Mount{ID: 40, Dev: "0:34"}) {
		t.Error("Has is wrong")
	}
}

// A mount slid beneath the one on top (MOVE_MOUNT_BENEATH) is listed after
// it, as this kernel lists them: the top is the one nothing is mounted on.
func TestTopAtBeneath(t *testing.T) {
	const table = `22 1 8:1 / / rw - ext4 /dev/sda1 rw
69 70 0:42 / /mnt rw - fuse.mirrorfs old rw
70 22 0:43 / /mnt rw - fuse.mirrorfs new rw
`
	mounts, err := Parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	if top, ok := TopAt(mounts, "/mnt"); !ok || top.ID != 69 {
		t.Errorf("TopAt = %+v, %v; want the old mount, still on top (id 69)", top, ok)
	}
}

func TestParseMountinfoErrors(t *testing.T) {
	for _, line := range []string{
		"36 22 0:32 / /mnt rw shared:20 fuse.mirrorfs src rw", // no separator
		"36 22 0:32 / - fuse src rw",                          // too few fields
		"x 22 0:32 / /mnt rw - fuse src rw",                   // bad id
	} {
		if _, err := Parse(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("ParseMountinfo(%q) succeeded", line)
		} else if !strings.Contains(err.Error(), "line 1") {
			t.Errorf("error %q does not name the line", err)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:         "plain",
		`a\040b`:        "a b",
		`tab\011nl\012`: "tab\tnl\n",
		`back\134`:      `back\`,
		`short\04`:      `short\04`,
		`not\999`:       `not\999`,
		`\`:             `\`,
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add(sampleMountinfo)
	f.Add(`1 2 3:4 / /a\04 b - t s o`)
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := Parse(strings.NewReader(s))
		if err == nil && len(mounts) > strings.Count(s, "\n")+1 {
			t.Errorf("%d mounts from %d lines", len(mounts), strings.Count(s, "\n")+1)
		}
	})
}
