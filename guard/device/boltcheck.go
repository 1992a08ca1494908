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
// file no longer reaches (a truncated file) is a SIGBUS, and a damaged
// element offset a SIGSEGV, that recover cannot catch (bbolt's own
// consistency check runs on a goroutine of its own). checkBoltFile reads
// the two meta pages the way bbolt does, refuses a file shorter than the
// pages the valid one counts, and walks every page reachable from the
// root and the freelist checking that each element lies inside its page,
// before bbolt is let near the file.
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
	if size > maxCheckedFile {
		return nil // larger than any state file the guard writes; bbolt's check alone
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil {
		return err
	}
	return checkBoltPages(data, *best)
}

// maxCheckedFile bounds the file read whole for the page walk.
const maxCheckedFile = 64 << 20

// Page layout (bbolt's internal/common): a 16-byte header (id u64, flags
// u16, count u16, overflow u32), then count 16-byte elements; an element's
// key (and a leaf's value after it) lies pos bytes after the element.
const (
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01
	boltElemSize     = 16
)

func checkBoltPages(data []byte, m boltMeta) error {
	ne := binary.NativeEndian
	psz := uint64(m.pageSize)
	seen := map[uint64]bool{}
	page := func(id uint64) ([]byte, error) {
		if id < 2 || id >= m.pgid || seen[id] {
			return nil, fmt.Errorf("page %d out of range or reached twice", id)
		}
		seen[id] = true
		off := id * psz
		overflow := uint64(ne.Uint32(data[off+12:]))
		if ne.Uint64(data[off:]) != id || id+overflow >= m.pgid {
			return nil, fmt.Errorf("page %d: bad header", id)
		}
		return data[off : off+(overflow+1)*psz], nil
	}
	var visit func(p []byte, depth int) error
	child := func(id uint64, depth int) error {
		p, err := page(id)
		if err != nil {
			return err
		}
		return visit(p, depth+1)
	}
	visit = func(p []byte, depth int) error {
		if depth > 64 || len(p) < boltPageHeader {
			return errors.New("page tree too deep or page too short")
		}
		flags, count := ne.Uint16(p[8:]), int(ne.Uint16(p[10:]))
		if boltPageHeader+count*boltElemSize > len(p) {
			return fmt.Errorf("page %d: %d elements do not fit", ne.Uint64(p), count)
		}
		for i := range count {
			e := boltPageHeader + i*boltElemSize
			switch flags {
			case boltBranchPage:
				pos, ksz := uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:]))
				if uint64(e)+pos+ksz > uint64(len(p)) {
					return fmt.Errorf("page %d: branch key outside the page", ne.Uint64(p))
				}
				if err := child(ne.Uint64(p[e+8:]), depth); err != nil {
					return err
				}
			case boltLeafPage:
				lflags, pos := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:]))
				ksz, vsz := uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
				start := uint64(e) + pos
				if start+ksz+vsz > uint64(len(p)) {
					return fmt.Errorf("page %d: leaf element outside the page", ne.Uint64(p))
				}
				if lflags&boltBucketLeaf == 0 {
					continue
				}
				v := p[start+ksz : start+ksz+vsz]
				if len(v) < 16 {
					return fmt.Errorf("page %d: bucket header cut short", ne.Uint64(p))
				}
				var err error
				if root := ne.Uint64(v); root == 0 {
					err = visit(v[16:], depth+1) // an inline bucket: its page follows
				} else {
					err = child(root, depth)
				}
				if err != nil {
					return err
				}
			default:
				return fmt.Errorf("page %d: flags %#x where a branch or leaf was expected", ne.Uint64(p), flags)
			}
		}
		return nil
	}
	if err := child(m.root, 0); err != nil {
		return err
	}
	if m.freelist == ^uint64(0) {
		return nil
	}
	fl, err := page(m.freelist)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if ne.Uint16(fl[8:])&boltFreelistPage == 0 {
		return errors.New("freelist page is not one")
	}
	n, head := uint64(ne.Uint16(fl[10:])), uint64(0)
	if n == 0xFFFF {
		n, head = ne.Uint64(fl[boltPageHeader:]), 1
	}
	if boltPageHeader+(head+n)*8 > uint64(len(fl)) {
		return errors.New("freelist longer than its page")
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
