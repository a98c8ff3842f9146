package tsa

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Backups of the TSA's files, taken while a node uses them: neither needs
// the node's handle, since both files are written so that a reader never
// sees a state a crash could not leave.

// ErrSerialFile: bytes that are not a serial file.
var ErrSerialFile = errors.New("tsa: not a serial file")

// SerialState is what a serial file holds: its node ID and high-water
// mark (no counter at or above it was handed out when it was written).
type SerialState struct {
	Node uint16
	Mark uint64
}

// ParseSerialFile reads the bytes of a serial file (see [FileSerials]): the
// higher of its valid copies. A file with no valid copy, of the wrong
// size, or whose copies name two nodes is ErrSerialFile.
func ParseSerialFile(data []byte) (SerialState, error) {
	if len(data) != serialFileLen {
		return SerialState{}, fmt.Errorf("%w: %d bytes, want %d", ErrSerialFile, len(data), serialFileLen)
	}
	nodeA, markA, okA := decodeSerialRecord(data[:serialRecordLen])
	nodeB, markB, okB := decodeSerialRecord(data[serialSlotB:serialFileLen])
	switch {
	case okA && okB && nodeA != nodeB:
		return SerialState{}, fmt.Errorf("%w: its copies name nodes %d and %d", ErrSerialFile, nodeA, nodeB)
	case okA && okB:
		return SerialState{nodeA, max(markA, markB)}, nil
	case okA:
		return SerialState{nodeA, markA}, nil
	case okB:
		return SerialState{nodeB, markB}, nil
	}
	return SerialState{}, fmt.Errorf("%w: no valid copy of its record", ErrSerialFile)
}

// EncodeSerialFile is a serial file holding st in both copies.
func EncodeSerialFile(st SerialState) []byte {
	b := make([]byte, serialFileLen)
	encodeSerialRecord(b[:serialRecordLen], st.Node, st.Mark)
	encodeSerialRecord(b[serialSlotB:], st.Node, st.Mark)
	return b
}

// ReadSerialFile reads the serial file at path, which a running node may
// be writing: a copy torn by a write in progress fails its checksum and
// the other copy, the previous mark, is read. Restored, an older mark is
// safe: [OpenFileSerials] starts at the larger of the mark and the time
// in microseconds.
func ReadSerialFile(path string) (SerialState, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SerialState{}, fmt.Errorf("tsa: serial file: %w", err)
	}
	st, err := ParseSerialFile(data)
	if err != nil {
		return SerialState{}, fmt.Errorf("tsa: serial file %s: %w", path, err)
	}
	return st, nil
}

// JournalLength is the length of the complete lines at the start of the
// journal at path, which a running node may be appending to: a copy of
// that many bytes is a journal holding every line acknowledged before the
// call (a line is complete and synced before its token is released; the
// zeros ahead of the data and a line being written are left out).
func JournalLength(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("tsa: journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var off, end int64
	for {
		chunk, err := r.ReadSlice('\n')
		if i := bytes.IndexByte(chunk, 0); i >= 0 {
			return end, nil // the zeros after the data
		}
		off += int64(len(chunk))
		switch {
		case err == nil:
			end = off
		case errors.Is(err, bufio.ErrBufferFull):
			// A line longer than the buffer: read on.
		case errors.Is(err, io.EOF):
			return end, nil
		default:
			return 0, fmt.Errorf("tsa: journal %s: %w", path, err)
		}
	}
}
