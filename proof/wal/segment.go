package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// EncodeSegment is segment n holding records, as [Log.Write] would have
// written them (frames of at most MaxFrame bytes, no zeros after the
// data): a copy of a log's unsealed records that [Open] reads back, for a
// backup of the store. An empty records gives a segment of its header
// alone.
func EncodeSegment(n uint64, records [][]byte) ([]byte, error) {
	total := headerSize
	for _, r := range records {
		if len(r) > MaxRecord {
			return nil, fmt.Errorf("wal: a record of %d bytes is over %d", len(r), MaxRecord)
		}
		total += frameHeader + 4 + len(r)
	}
	out := make([]byte, 0, total)
	out = append(out, header(n)...)
	for len(records) > 0 {
		// As many records as fit one frame.
		size, k := 0, 0
		for k < len(records) && size+4+len(records[k]) <= MaxFrame {
			size += 4 + len(records[k])
			k++
		}
		start := len(out)
		out = append(out, frameMagic...)
		out = binary.BigEndian.AppendUint32(out, uint32(size))
		out = append(out, 0, 0, 0, 0)
		for _, r := range records[:k] {
			out = binary.BigEndian.AppendUint32(out, uint32(len(r)))
			out = append(out, r...)
		}
		frame := out[start:]
		sum := crc32.Update(crc32.Checksum(frame[4:8], castagnoli), castagnoli, frame[frameHeader:])
		binary.BigEndian.PutUint32(frame[8:12], sum)
		records = records[k:]
	}
	return out, nil
}

// SegmentName is the file name of segment n in a log's directory.
func SegmentName(n uint64) string { return segmentName(n) }
