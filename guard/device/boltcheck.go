package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt maps the file and reads pages through the mapping: a page the
// file no longer reaches (a truncated file) is a SIGBUS that recover
// cannot catch. checkBoltFile reads the two meta pages the way bbolt
// does and refuses a file shorter than the pages the valid one counts,
// before bbolt is let near it.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	boltPageHeader  = 16 // id, flags, count, overflow
	boltMetaSumLen  = 56 // the meta fields before its checksum
	boltMetaMinPage = 1024
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

var errNoMeta = errors.New("no valid meta page")

// checkBoltFile checks the file at path before bbolt opens it. A file
// that does not exist is fine (bbolt creates it); an empty one is not
// (a crash while it was created: there is nothing in it to trust).
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return errors.New("empty file")
	}
	var best *boltMeta
	m0, err0 := readBoltMeta(f, 0)
	if err0 == nil {
		best = &m0
	}
	// The second meta page sits one page in; its size is the first
	// page's, or the common sizes when the first is unreadable.
	offsets := []int64{4096, 16384, 65536, 1024, 2048, 8192, 32768}
	if err0 == nil {
		offsets = []int64{int64(m0.pageSize)}
	}
	for _, off := range offsets {
		if off >= size {
			continue
		}
		m1, err := readBoltMeta(f, off)
		if err != nil || int64(m1.pageSize) != off {
			continue
		}
		if best == nil || m1.txid > best.txid {
			best = &m1
		}
		break
	}
	if best == nil {
		return fmt.Errorf("%w (%v)", errNoMeta, err0)
	}
	if best.root >= best.pgid || best.freelist >= best.pgid && best.freelist != ^uint64(0) {
		return fmt.Errorf("meta page points above the high-water mark (%d pages)", best.pgid)
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return fmt.Errorf("file truncated: %d bytes, its meta page counts %d pages of %d (%d bytes)", size, best.pgid, best.pageSize, need)
	}
	return nil
}

func readBoltMeta(f *os.File, off int64) (boltMeta, error) {
	var b [boltPageHeader + boltMetaSumLen + 8]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return boltMeta{}, errors.New("short meta page")
		}
		return boltMeta{}, err
	}
	m := b[boltPageHeader:]
	ne := binary.NativeEndian
	if ne.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("bad magic")
	}
	if ne.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, fmt.Errorf("version %d", ne.Uint32(m[4:]))
	}
	h := fnv.New64a()
	h.Write(m[:boltMetaSumLen])
	if h.Sum64() != ne.Uint64(m[boltMetaSumLen:]) {
		return boltMeta{}, errors.New("meta checksum mismatch")
	}
	meta := boltMeta{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]), // InBucket{root, sequence}
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}
	if meta.pageSize < boltMetaMinPage || meta.pageSize&(meta.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", meta.pageSize)
	}
	return meta, nil
}
