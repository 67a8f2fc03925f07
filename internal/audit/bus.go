package audit

import "sync"

// bus fans committed events out to subscribers without ever blocking the
// committer: a subscriber that cannot keep up is dropped (its channel closed)
// rather than silently skipped.
type bus struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	match func(Event) bool
	ch    chan Event
}

func (b *bus) subscribe(match func(Event) bool, buf int) (<-chan Event, func()) {
	if buf < 1 {
		buf = 1
	}
	s := &subscriber{match: match, ch: make(chan Event, buf)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*subscriber]struct{})
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s.ch, func() { b.drop(s) }
}

func (b *bus) drop(s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.ch)
	}
}

func (b *bus) publish(events []Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		for _, ev := range events {
			if s.match != nil && !s.match(ev) {
				continue
			}
			select {
			case s.ch <- ev:
			default:
				delete(b.subs, s)
				close(s.ch)
			}
			if _, ok := b.subs[s]; !ok {
				break
			}
		}
	}
}

// empty reports whether no one is subscribed.
func (b *bus) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs) == 0
}
