package device

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketMeta    = []byte("meta")
	bucketDevices = []byte("devices")
	keySchema     = []byte("schema")
)

// Store is the bbolt file holding device records.
type Store struct {
	db   *bolt.DB
	path string
	log  *slog.Logger

	mu        sync.Mutex
	persisted map[string]bool // persistent copies already checked for what a copy would lose
}

// ErrLocked means another process (a running guard) holds the file.
var ErrLocked = errors.New("device: state file is in use by another process")

// OpenStore opens (or creates) the state file at path. When persist is
// set and path does not exist yet (a router after a reboot: path is in
// RAM), the persistent copy is restored first. A file that cannot be read,
// fails bbolt's consistency check or has another schema version is moved
// aside (path.damaged-TIME); the persistent copy, when there is one and
// it was not the damaged file's source, takes its place, and only when
// that fails too does a fresh file start: the guard runs with no history
// rather than not at all. Each step is logged.
func OpenStore(path, persist string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("device: state directory: %w", err)
	}
	restored := false
	if persist != "" {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			if err := copyFile(persist, path); err == nil {
				restored = true
				log.Info("state restored from the persistent copy", "from", persist, "to", path)
			} else if !os.IsNotExist(err) {
				log.Warn("persistent state copy unreadable; starting fresh", "file", persist, "err", err)
			}
		}
	}
	db, err := openChecked(path)
	if errors.Is(err, ErrLocked) {
		return nil, err
	}
	if err != nil {
		aside, merr := moveAside(path, err)
		if merr != nil {
			return nil, merr
		}
		switch {
		case restored:
			log.Error("persistent state copy damaged; moved aside, starting fresh", "file", persist, "moved_to", aside, "err", err)
		case persist != "" && fileExists(persist):
			log.Error("state file damaged; moved aside, falling back to the persistent copy", "file", path, "moved_to", aside, "persistent_copy", persist, "err", err)
			if db, err = restoreFrom(persist, path, log); err != nil {
				return nil, err
			}
		default:
			log.Error("state file damaged; moved aside, starting fresh (no persistent copy)", "file", path, "moved_to", aside, "err", err)
		}
		if db == nil {
			if db, err = openChecked(path); err != nil {
				return nil, err
			}
		}
	}
	return &Store{db: db, path: path, log: log, persisted: map[string]bool{}}, nil
}

// restoreFrom copies the persistent copy over path (whose damaged file
// was moved aside) and opens it; when that copy is damaged too it is left
// where it is, path is cleared, and nil is returned for a fresh start.
func restoreFrom(persist, path string, log *slog.Logger) (*bolt.DB, error) {
	if err := copyFile(persist, path); err != nil {
		log.Error("persistent state copy unreadable; starting fresh", "file", persist, "err", err)
		return nil, nil
	}
	db, err := openChecked(path)
	if err == nil {
		log.Warn("state restored from the persistent copy after damage; changes since it was written are lost", "from", persist, "to", path)
		return db, nil
	}
	if errors.Is(err, ErrLocked) {
		return nil, err
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, fmt.Errorf("device: state file %s: %w", path, rerr)
	}
	log.Error("persistent state copy damaged too; starting fresh (it is replaced at the next persist)", "file", persist, "err", err)
	return nil, nil
}

func moveAside(path string, cause error) (string, error) {
	aside := path + ".damaged-" + time.Now().UTC().Format("20060102T150405")
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("device: state file %s damaged (%v) and cannot be moved aside: %w", path, cause, err)
	}
	return aside, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func openChecked(path string) (db *bolt.DB, err error) {
	defer func() {
		// bbolt panics on some kinds of corruption, and reads the file
		// through its mapping, where a damaged page offset is a memory
		// fault; with SetPanicOnFault that is a panic too (in this
		// goroutine): a damaged file must not take the guard down.
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("device: state file unreadable: %v", p)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if err := checkBoltFile(path); err != nil {
		return nil, fmt.Errorf("device: state file unreadable: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("device: state file: %w", err)
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("device: open state file: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// Walk every key here first: bbolt's own check runs on a
		// goroutine of its own, where a fault could not be caught.
		var size int64
		if fi != nil {
			size = fi.Size()
		}
		if err := walkFile(tx, size); err != nil {
			return err
		}
		var first error
		for cerr := range tx.Check() { // drained: Check's goroutine sends every error
			if first == nil {
				first = cerr
			}
		}
		if first != nil {
			return fmt.Errorf("consistency check: %w", first)
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketDevices); err != nil {
			return err
		}
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		if string(v) != strconv.Itoa(SchemaVersion) {
			return fmt.Errorf("%w: file has %q, guard has %d", ErrSchema, v, SchemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("device: state file: %w", err)
	}
	return db, nil
}

// walkFile reads every key and value of every bucket, so that a page a
// damaged file points to wildly faults here, and stops at more elements
// than a file of size bytes can hold (a cycle of pages).
func walkFile(tx *bolt.Tx, size int64) error {
	budget := size/8 + 1024
	var walk func(b *bolt.Bucket, depth int) error
	walk = func(b *bolt.Bucket, depth int) error {
		if depth > 4 {
			return errors.New("buckets nested too deep")
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if budget--; budget < 0 {
				return errors.New("more keys than the file can hold (a cycle of pages)")
			}
			var sum byte
			for _, x := range k {
				sum ^= x
			}
			for _, x := range v {
				sum ^= x
			}
			_ = sum
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					if err := walk(nb, depth+1); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b, 0) })
}

// Load returns every record. Records that do not decode are skipped and
// logged.
func (s *Store) Load() ([]*Record, error) {
	return loadRecords(s.db, s.log)
}

func loadRecords(db *bolt.DB, log *slog.Logger) ([]*Record, error) {
	var out []*Record
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := DecodeRecord(v)
			if err != nil {
				log.Warn("skipping unreadable device record", "key", string(k), "err", err)
				return nil
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("device: load: %w", err)
	}
	return out, nil
}

// GetMeta returns a small value another part of the guard keeps in the
// state file (nil if none): the DNSSEC trust anchors' RFC 5011 state.
func (s *Store) GetMeta(key string) ([]byte, error) {
	if key == string(keySchema) {
		return nil, fmt.Errorf("device: meta key %q is reserved", key)
	}
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("device: meta %s: %w", key, err)
	}
	return out, nil
}

// PutMeta stores a small value under key in the state file (persisted
// with the device records).
func (s *Store) PutMeta(key string, v []byte) error {
	if key == string(keySchema) {
		return fmt.Errorf("device: meta key %q is reserved", key)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte(key), v) }); err != nil {
		return fmt.Errorf("device: meta %s: %w", key, err)
	}
	return nil
}

// Save writes records and deletes the IDs in gone, all in one transaction.
func (s *Store) Save(records []*Record, gone []string) error {
	if len(records) == 0 && len(gone) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		for _, r := range records {
			v, err := EncodeRecord(r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(r.ID), v); err != nil {
				return err
			}
		}
		for _, id := range gone {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("device: save %d records: %w", len(records), err)
	}
	return nil
}

// CopyTo writes a consistent copy of the file to path, through a
// temporary file and a rename, so path is never half written. The first
// time a run copies over an existing file at path, that file is read: if
// it holds device records the live state does not (a fresh start after
// damage, records forgotten since), they are named in the log and the old
// copy is kept as path.previous rather than lost silently.
func (s *Store) CopyTo(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("device: persist directory: %w", err)
	}
	s.mu.Lock()
	first := !s.persisted[path]
	s.persisted[path] = true
	s.mu.Unlock()
	if first {
		s.checkOverwrite(path)
	}
	tmp := path + ".tmp"
	err := s.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(tmp, 0o600) })
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("device: copy state to %s: %w", path, err)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("device: copy state to %s: %w", path, err)
	}
	return nil
}

// maxLostNamed bounds the device IDs one log line names.
const maxLostNamed = 16

// checkOverwrite logs what copying over the file at path would lose.
func (s *Store) checkOverwrite(path string) {
	if !fileExists(path) {
		return
	}
	old, err := readIDs(path)
	if err != nil {
		s.log.Warn("persistent state copy unreadable; replacing it with the live state", "file", path, "err", err)
		return
	}
	live := map[string]bool{}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, _ []byte) error {
			live[string(k)] = true
			return nil
		})
	})
	if err != nil {
		s.log.Warn("reading the live state before persisting", "err", err)
		return
	}
	var lost []string
	for _, id := range old {
		if !live[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) == 0 {
		return
	}
	kept := path + ".previous"
	if err := os.Rename(path, kept); err != nil {
		kept = ""
	}
	named := lost
	if len(named) > maxLostNamed {
		named = named[:maxLostNamed]
	}
	s.log.Warn("persistent state copy replaced; device records it held are not in the live state",
		"file", path, "lost", len(lost), "of", len(old), "devices", strings.Join(named, " "), "old_copy_kept_as", kept)
}

// readIDs lists the device IDs of a state file, read only.
func readIDs(path string) (ids []string, err error) {
	defer func() {
		if p := recover(); p != nil {
			ids, err = nil, fmt.Errorf("device: state file unreadable: %v", p)
		}
	}()
	if err := checkBoltFile(path); err != nil {
		return nil, fmt.Errorf("device: %s unreadable: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("device: open %s: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			if err == nil {
				err = fmt.Errorf("consistency check: %w", cerr)
			}
		}
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketDevices)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	return ids, err
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// ReadRecords reads the records of a state file without writing to it
// (dnsguard devices while no guard runs). It fails with ErrLocked while a
// guard holds the file.
func ReadRecords(path string, log *slog.Logger) ([]*Record, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("device: state file: %w", err)
	}
	if err := checkBoltFile(path); err != nil {
		return nil, fmt.Errorf("device: state file unreadable: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("device: open state file: %w", err)
	}
	defer db.Close()
	return loadRecords(db, log)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, to)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("device: sync %s: %w", path, err)
	}
	return nil
}
