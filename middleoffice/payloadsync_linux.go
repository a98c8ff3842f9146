package middleoffice

import (
	"os"
	"syscall"
)

// startWriteback asks Linux to start writing a range of f to the disk
// (sync_file_range(2), SYNC_FILE_RANGE_WRITE: it does not wait, nor make
// anything durable), so that the fsync of a large payload's Commit finds
// little left to write. A failure only means that fsync writes it all.
func startWriteback(f *os.File, off, n int64) {
	const syncFileRangeWrite = 2 // SYNC_FILE_RANGE_WRITE, linux/fs.h
	_ = syscall.SyncFileRange(int(f.Fd()), off, n, syncFileRangeWrite)
}
