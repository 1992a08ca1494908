package device

// Flush writes every changed record in one transaction.
func (r *Registry) Flush() error {
	r.mu.Lock()
	recs := make([]*Record, 0, len(r.dirty))
	for id := range r.dirty {
		if e, ok := r.devices[id]; ok && e.confirmed {
			recs = append(recs, r.recordLocked(e))
		}
	}
	clear(r.dirty)
	deleted := r.deleted
	r.deleted = nil
	r.mu.Unlock()
	if r.opts.Store == nil {
		return nil
	}
	if len(recs) == 0 && len(deleted) == 0 {
		return nil
	}
	if err := r.opts.Store.Save(recs, deleted); err != nil {
		r.FlushErrors.Add(1)
		// Keep them dirty for the next batch.
		r.mu.Lock()
		for _, rec := range recs {
			r.dirty[rec.ID] = true
		}
		r.deleted = append(r.deleted, deleted...)
		r.mu.Unlock()
		return err
	}
	r.Flushes.Add(1)
	return nil
}

// Persist copies the store's file to the persistent path.
func (r *Registry) Persist() error {
	if r.opts.Store == nil || r.opts.Persist == "" {
		return nil
	}
	return r.opts.Store.CopyTo(r.opts.Persist)
}
