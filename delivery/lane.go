package delivery

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/basicauth"
	"github.com/webhookgw/gateway/store"
	"gopkg.in/yaml.v3"
)

// tripAfter is how many consecutive failed attempts make a subscription a probe: one
// delivery at a time, quick retries and all, until an attempt succeeds (a circuit breaker's
// half-open state).
const tripAfter = 3

// roundsPerSlot bounds a lane's claimed rounds (in flight, waiting for a quick retry, or
// being recorded) to this many per slot.
const roundsPerSlot = 4

// lane is one subscription's share of the engine: its slots, its claims and its health. The
// engine's mutex guards every field but limiter, which is safe for concurrent use.
type lane struct {
	id string
	// sub is the subscription as last read (nil once it is deleted); gen is the store's
	// subscription generation it was read at, loaded whether it has been read at all.
	sub    *store.Subscription
	gen    uint64
	loaded bool

	// active counts slots taken: attempts in flight or about to start. resuming counts rounds
	// waiting for a slot to make a quick retry; they go before new claims. rounds counts
	// claimed rounds not yet recorded.
	active, resuming, rounds int
	// dirty says the store may hold due deliveries for the lane; nextDue, when not zero, is
	// when its next one is due. backlog says due deliveries were stored unleased (an ingest
	// the lane had no room for, a retry, a due time reached): until a claim has taken them,
	// new deliveries are not leased at birth, so that they do not pass the older ones.
	dirty, backlog bool
	nextDue        time.Time
	// recheck says a retry may have been asked for while rounds were in flight: the lane
	// looks at the store again as each of them ends.
	recheck bool
	// capped says the lane's last claim came short with no next due time while its
	// subscription sets max_in_flight: the store may have capped it at the leases in flight,
	// its own rounds' among them (a round frees its slot before its outcome ends its lease), so
	// the lane claims again when one of its rounds ends.
	capped bool
	// failStreak counts consecutive failed attempts.
	failStreak int

	limiterMu sync.Mutex
	limiter   *rate.Limiter
	limit     float64
}

// slots returns how many attempts the lane may have in flight: the subscription's own
// max_in_flight or def, and one for a fifo subscription or a probe.
func (l *lane) slots(def int) int {
	switch {
	case l.sub == nil:
		return def // deleted: its leftover claims are failed without an attempt
	case l.sub.Policy.Ordering == store.FIFO || l.probing():
		return 1
	case l.sub.Policy.MaxInFlight > 0:
		return l.sub.Policy.MaxInFlight
	}
	return def
}

// probing reports whether the subscription fails: it gets one delivery at a time until an
// attempt succeeds, so that a dead or erroring target is not sent every delivery at once.
func (l *lane) probing() bool {
	return l.failStreak >= tripAfter || l.sub != nil && l.sub.InErrorState
}

// room returns how many more deliveries the lane may claim now: a slot each, but none while a
// probe's or a fifo subscription's one round is under way, and no more than roundsPerSlot
// rounds a slot in all (rounds waiting for a quick retry hold no slot).
func (l *lane) room(def int) int {
	if l.probing() || l.sub != nil && l.sub.Policy.Ordering == store.FIFO {
		return 1 - l.rounds
	}
	s := l.slots(def)
	return min(s-l.active-l.resuming, roundsPerSlot*s-l.rounds)
}

// rateLimiter returns the token bucket of the subscription's rate_limit, or nil.
func (l *lane) rateLimiter() *rate.Limiter {
	l.limiterMu.Lock()
	defer l.limiterMu.Unlock()
	return l.limiter
}

// setRate makes the token bucket follow a rate limit of perSecond (0: none).
func (l *lane) setRate(perSecond float64) {
	l.limiterMu.Lock()
	defer l.limiterMu.Unlock()
	switch {
	case perSecond == l.limit:
	case perSecond <= 0:
		l.limiter = nil
	case l.limiter == nil:
		l.limiter = rate.NewLimiter(rate.Limit(perSecond), 1)
	default:
		l.limiter.SetLimit(rate.Limit(perSecond))
	}
	l.limit = perSecond
}

// chains caches subscriptions' plugin instances for as long as a subscription keeps its
// plugin configuration and credentials: stateful plugins (oauth2's token) live that long, and
// no longer. The configuration is told apart by its content, not by the subscription's
// version, which starts again at 1 when a subscription is deleted and made again.
type chains struct {
	mu sync.Mutex
	m  map[string]chain
}

// chain is a subscription's plugins for one configuration of it.
type chain struct {
	sub     *store.Subscription // the copy it was last asked for, a fast path
	key     [sha256.Size]byte   // the configuration it was made from
	plugins []plugins.Plugin
	err     error
}

// configKey digests what a subscription's plugins are made from.
func configKey(sub *store.Subscription) [sha256.Size]byte {
	h := sha256.New()
	for _, s := range []string{sub.Username, sub.Password} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	for _, p := range sub.Plugins {
		h.Write([]byte(p.Name))
		h.Write([]byte{0})
		h.Write([]byte(p.Config))
		h.Write([]byte{0})
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// get returns sub's plugins, made from its stored configs once per configuration. A
// registration's user name and password come first, as a basic-auth plugin.
func (cs *chains) get(sub *store.Subscription, reg *plugins.Registry) ([]plugins.Plugin, error) {
	// Held throughout: two rounds that find no chain must not each make one (two oauth2
	// instances would each fetch a token). Making plugins does no I/O.
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.m[sub.ID]
	if ok && c.sub == sub {
		return c.plugins, c.err
	}
	key := configKey(sub)
	if ok && c.key == key {
		c.sub = sub
		cs.m[sub.ID] = c
		return c.plugins, c.err
	}
	c = chain{sub: sub, key: key}
	if sub.Username != "" {
		p, err := basicauth.New(basicauth.Config{Username: sub.Username, Password: sub.Password})
		if err != nil {
			c.err = err
		} else {
			c.plugins = append(c.plugins, p)
		}
	}
	for _, spec := range sub.Plugins {
		if c.err != nil {
			break
		}
		var node yaml.Node // an empty config is the zero node, as when it was checked
		var err error
		if spec.Config != "" {
			err = yaml.Unmarshal([]byte(spec.Config), &node)
		}
		if err == nil {
			var p plugins.Plugin
			p, err = reg.New(spec.Name, &node)
			c.plugins = append(c.plugins, p)
		}
		if err != nil {
			c.err = fmt.Errorf("%s: %w", spec.Name, err)
		}
	}
	if cs.m == nil {
		cs.m = make(map[string]chain)
	}
	cs.m[sub.ID] = c
	return c.plugins, c.err
}

// forget drops a deleted subscription's plugins, and the secrets they hold.
func (cs *chains) forget(id string) {
	cs.mu.Lock()
	delete(cs.m, id)
	cs.mu.Unlock()
}
