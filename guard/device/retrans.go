package device

import (
	"hash/maphash"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
)

// Retransmissions (the same question and ID, from the same port or a new
// one: some stubs retry on a fresh socket) are no evidence: the
// sequential grading would otherwise read three tries of one query as a
// constant ID. A device's recent queries are kept as hashes to tell them.

// retransWindow: a query sent again within this long of its last try is
// a retransmission.
const retransWindow = 30 * time.Second

// retransKey hashes what makes two queries tries of one: the question
// (name in lower case, so a stub's 0x20 retry in other letter case
// counts, and type) and the ID.
func retransKey(seed maphash.Seed, q *dnswire.Query) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var name [dnswire.MaxName + 1]byte
	h.Write(q.LowerName(name[:0]))
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(q.ID>>8), byte(q.ID), byte(q.Type>>8), byte(q.Type)
	h.Write(b[:])
	return h.Sum64()
}

// recentQueries holds the keys of a device's last queries and when each
// was last tried.
type recentQueries struct {
	keys [8]uint64
	at   [8]int64 // unix ns
	next uint8
}

// retry reports whether key was tried within retransWindow before t
// (then its time moves to t: a device retrying the same question for
// long is still retrying); otherwise key is remembered, in place of the
// oldest.
func (r *recentQueries) retry(key uint64, t int64) bool {
	for i := range r.keys {
		if r.keys[i] == key && t-r.at[i] < int64(retransWindow) {
			r.at[i] = t
			return true
		}
	}
	slot := int(r.next) % len(r.keys)
	r.keys[slot], r.at[slot] = key, t
	r.next = uint8(slot + 1)
	return false
}

// reset forgets every query: after a reboot a repeated query is not a
// retransmission.
func (r *recentQueries) reset() { *r = recentQueries{} }
