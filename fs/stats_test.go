package fs

import (
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// fakeRaw answers every request with a fixed status; opens in passthrough
// with handle fh.
type fakeRaw struct {
	fuse.RawFileSystem
	st fuse.Status
	fh uint64
}

func (f *fakeRaw) GetAttr(<-chan struct{}, *fuse.GetAttrIn, *fuse.AttrOut) fuse.Status { return f.st }
func (f *fakeRaw) Open(_ <-chan struct{}, _ *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	out.Fh, out.OpenFlags = f.fh, fuse.FOPEN_PASSTHROUGH
	return f.st
}
func (f *fakeRaw) Release(<-chan struct{}, *fuse.ReleaseIn) {}

// TestStatsCounts drives the collector as go-fuse would: requests by
// operation, errors by errno, open and passthrough files.
func TestStatsCounts(t *testing.T) {
	inner := &fakeRaw{RawFileSystem: fuse.NewDefaultRawFileSystem(), st: fuse.OK, fh: 70000}
	raw, s := withStats(inner)
	for range 3 {
		raw.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{})
	}
	inner.st = fuse.ENOENT
	raw.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{})
	inner.st = fuse.OK
	raw.Open(nil, &fuse.OpenIn{}, &fuse.OpenOut{})
	snap := s.Snapshot()
	if snap.OpenFiles != 1 || snap.PassthroughOpen != 1 {
		t.Errorf("open %d, passthrough %d; want 1, 1", snap.OpenFiles, snap.PassthroughOpen)
	}
	got := map[string]OpStat{}
	for _, o := range snap.Ops {
		got[o.Name] = o
	}
	if g := got["GETATTR"]; g.Count != 4 || g.Errors[int(fuse.ENOENT)] != 1 || len(g.Errors) != 1 {
		t.Errorf("GETATTR: %+v; want 4 requests, one ENOENT", g)
	}
	raw.Release(nil, &fuse.ReleaseIn{Fh: 70000})
	snap = s.Snapshot()
	if snap.OpenFiles != 0 || snap.PassthroughOpen != 0 {
		t.Errorf("after release: open %d, passthrough %d; want 0, 0", snap.OpenFiles, snap.PassthroughOpen)
	}
	if a := s.Answered(); a != 6 {
		t.Errorf("answered %d, want 6", a)
	}
}

func TestStatsQuantile(t *testing.T) {
	var o OpStat
	o.Lat[latBucket(1500*time.Nanosecond)] = 98 // [1µs, 2µs)
	o.Lat[latBucket(3*time.Millisecond)] = 2    // [2.1ms, 4.2ms)
	if p := o.Quantile(0.5); p < time.Microsecond || p >= 2*time.Microsecond {
		t.Errorf("p50 %v, want within [1µs, 2µs)", p)
	}
	if p := o.Quantile(0.99); p < 2*time.Millisecond || p >= 5*time.Millisecond {
		t.Errorf("p99 %v, want within the millisecond bucket", p)
	}
	o = OpStat{}
	o.Lat[latBuckets-1] = 1
	if p, lo := o.Quantile(0.5), BucketLimit(latBuckets-2); p != lo {
		t.Errorf("p50 of the unbounded bucket %v, want its lower bound %v", p, lo)
	}
}

func TestHandleBits(t *testing.T) {
	var h handleBits
	if h.clear(5) {
		t.Error("an unmarked handle was cleared")
	}
	if !h.set(5) || !h.set(handlesPerPage+1) || h.set(handleLimit) {
		t.Error("set: wrong tracking")
	}
	if !h.clear(5) || h.clear(5) || h.clear(6) || !h.clear(handlesPerPage+1) {
		t.Error("clear: wrong answers")
	}
}

// BenchmarkStatsGetattr is the collector's own cost on a request: compare
// with BenchmarkGetattrBare.
func BenchmarkStatsGetattr(b *testing.B) {
	raw, _ := withStats(&fakeRaw{RawFileSystem: fuse.NewDefaultRawFileSystem()})
	in, out := &fuse.GetAttrIn{}, &fuse.AttrOut{}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			raw.GetAttr(nil, in, out)
		}
	})
}

func BenchmarkGetattrBare(b *testing.B) {
	var raw fuse.RawFileSystem = &fakeRaw{RawFileSystem: fuse.NewDefaultRawFileSystem()}
	in, out := &fuse.GetAttrIn{}, &fuse.AttrOut{}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			raw.GetAttr(nil, in, out)
		}
	})
}
