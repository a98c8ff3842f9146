//go:build !linux

package middleoffice

import "os"

// No direct I/O here: large payloads go through the page cache.
func setDirect(*os.File, bool) bool { return false }

func isDirect(*os.File) bool { return false }

func directRefused(error) bool { return false }

func allocDirect(int) []byte { return nil }
