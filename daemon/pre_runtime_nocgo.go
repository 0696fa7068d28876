//go:build !(linux && cgo)

package daemon

// Without cgo the pre-runtime stage is not linked in. Main notices that a
// background start was asked for and refuses, rather than quietly staying in
// the foreground.

func readStage() stage { return stage{} }
