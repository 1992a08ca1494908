package entropy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Encoding: a version byte, the fixed fields as uvarints and float64 bits,
// the heavy hitters, then the seen-values bitmap either as a sorted list of
// values (when few) or as the raw 8 KiB.
const (
	encVersion    = 1
	bitmapAsList  = 0
	bitmapAsWords = 1
)

// ErrEncoding is wrapped by UnmarshalBinary's errors.
var ErrEncoding = errors.New("entropy: bad estimator encoding")

// MarshalBinary encodes the estimator for the device store.
func (e *Estimator) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 256)
	b = append(b, encVersion)
	for _, u := range []uint64{
		e.n, math.Float64bits(e.mean), math.Float64bits(e.m2),
		uint64(e.boots), uint64(e.boot), e.bootN, e.bootHits,
		uint64(e.closedBoots), uint64(e.replayed),
		uint64(e.nRecent), e.steps, e.small, e.direct,
	} {
		b = binary.AppendUvarint(b, u)
	}
	for i := 0; i < e.nRecent; i++ {
		b = binary.BigEndian.AppendUint16(b, e.recent[i])
	}
	b = e.heavy.appendBinary(b)
	b = e.first.appendBinary(b)
	if e.distinct < bitmapSize*8/2 { // a list of 2-byte values is smaller
		b = append(b, bitmapAsList)
		b = binary.AppendUvarint(b, uint64(e.distinct))
		e.values(func(v uint16) { b = binary.BigEndian.AppendUint16(b, v) })
	} else {
		b = append(b, bitmapAsWords)
		seen := e.seen
		if seen == nil {
			seen = new([bitmapSize]uint64)
			e.values(func(v uint16) { seen[v>>6] |= 1 << (v & 63) })
		}
		for _, word := range seen {
			b = binary.BigEndian.AppendUint64(b, word)
		}
	}
	return b, nil
}

func (hs *hitters) appendBinary(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(hs.h)))
	for _, h := range hs.h {
		b = binary.BigEndian.AppendUint16(b, h.value)
		b = binary.AppendUvarint(b, h.count)
		b = binary.AppendUvarint(b, h.err)
		b = binary.AppendUvarint(b, uint64(h.boots))
		b = binary.AppendUvarint(b, uint64(h.lastBoot))
	}
	return b
}

func (hs *hitters) decode(d *decoder, total uint64) {
	n := d.uvarint("hitter count")
	if n > heavyK {
		d.fail("hitter count out of range")
		return
	}
	hs.h = nil
	if n > 0 {
		hs.h = make([]heavy, n)
	}
	for i := range hs.h {
		h := &hs.h[i]
		h.value = d.u16("hitter value")
		h.count = d.uvarint("hitter count")
		h.err = d.uvarint("hitter error")
		h.boots = d.u32("hitter boots")
		h.lastBoot = d.u32("hitter last boot")
		if h.err >= h.count || h.count > total {
			d.fail("hitter count out of range")
		}
	}
}

// UnmarshalBinary restores an estimator encoded by MarshalBinary. On error
// the estimator is left empty.
func (e *Estimator) UnmarshalBinary(data []byte) error {
	b := e.budget
	*e = Estimator{budget: b}
	if err := e.unmarshal(data); err != nil {
		*e = Estimator{budget: b}
		return err
	}
	return nil
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at offset %d", ErrEncoding, what, d.off)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail(what + " out of range")
	}
	return uint32(v)
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(what)
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) u16(what string) uint16 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 2 {
		d.fail(what)
		return 0
	}
	d.off += 2
	return binary.BigEndian.Uint16(d.b[d.off-2:])
}

func (d *decoder) u64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail(what)
		return 0
	}
	d.off += 8
	return binary.BigEndian.Uint64(d.b[d.off-8:])
}

func (e *Estimator) unmarshal(data []byte) error {
	d := &decoder{b: data}
	if v := d.byte1("version"); d.err == nil && v != encVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrEncoding, v, encVersion)
	}
	e.n = d.uvarint("count")
	e.mean = math.Float64frombits(d.uvarint("mean"))
	e.m2 = math.Float64frombits(d.uvarint("m2"))
	e.boots = d.u32("boots")
	e.boot = d.u32("boot")
	e.bootN = d.uvarint("boot count")
	e.bootHits = d.uvarint("boot hits")
	e.closedBoots = d.u32("closed boots")
	e.replayed = d.u32("replayed boots")
	nRecent := d.uvarint("recent count")
	e.steps = d.uvarint("steps")
	e.small = d.uvarint("small steps")
	e.direct = d.uvarint("direct steps")
	if d.err != nil {
		return d.err
	}
	if nRecent > recentLen {
		return fmt.Errorf("%w: %d recent values", ErrEncoding, nRecent)
	}
	e.nRecent = int(nRecent)
	for i := range e.nRecent {
		e.recent[i] = d.u16("recent value")
	}
	e.heavy.decode(d, e.n)
	e.first.decode(d, e.n)
	switch d.byte1("bitmap form") {
	case bitmapAsList:
		k := d.uvarint("distinct count")
		if k > 65536 {
			d.fail("distinct count out of range")
		}
		seen := new([bitmapSize]uint64)
		for i := uint64(0); i < k && d.err == nil; i++ {
			if v := d.u16("value"); d.err == nil {
				if seen[v>>6]&(1<<(v&63)) != 0 {
					d.fail("value listed twice")
				}
				seen[v>>6] |= 1 << (v & 63)
			}
		}
		if d.err == nil {
			e.setBitmap(seen)
		}
	case bitmapAsWords:
		seen := new([bitmapSize]uint64)
		for w := range seen {
			seen[w] = d.u64("bitmap")
		}
		e.setBitmap(seen)
	default:
		d.fail("bitmap form")
	}
	if d.err != nil {
		return d.err
	}
	if d.off != len(data) {
		return fmt.Errorf("%w: %d trailing bytes", ErrEncoding, len(data)-d.off)
	}
	e.distinct = e.countDistinct()
	if (e.n == 0) != (len(e.heavy.h) == 0) || (e.n == 0) != (e.distinct == 0) {
		return fmt.Errorf("%w: %d values but %d heavy hitters and %d distinct", ErrEncoding, e.n, len(e.heavy.h), e.distinct)
	}
	if uint64(e.distinct) > e.n || e.bootHits > e.bootN || e.small > e.steps || e.direct > e.small || e.replayed > e.closedBoots {
		return fmt.Errorf("%w: inconsistent counters", ErrEncoding)
	}
	return nil
}

// setBitmap takes seen as the values seen, kept as a list when few.
func (e *Estimator) setBitmap(seen *[bitmapSize]uint64) {
	n := 0
	for _, w := range seen {
		n += bits.OnesCount64(w)
	}
	if n > sparseMax {
		if e.budget != nil {
			e.budget.take(true) // what was stored is kept (the store is bounded)
		}
		e.useBitmap(seen)
		return
	}
	e.seen, e.vals = nil, nil
	if n > 0 {
		e.vals = make([]uint16, 0, n)
	}
	for w, word := range seen {
		for word != 0 {
			bit := bits.TrailingZeros64(word)
			word &= word - 1
			e.vals = append(e.vals, uint16(w*64+bit))
		}
	}
}

func (e *Estimator) countDistinct() uint32 {
	if e.seen == nil {
		return uint32(len(e.vals))
	}
	var n uint32
	for _, w := range e.seen {
		n += uint32(bits.OnesCount64(w))
	}
	return n
}
