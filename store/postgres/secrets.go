package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/secretbox"
)

// Secrets at rest: subscriptions.password holds the sealed password, and subscriptions.plugins
// a JSON array of {name, config} whose configs are sealed one by one (names stay readable).
// Each sealed value is bound to its row and place (passwordAAD, pluginAAD).

func passwordAAD(id string) string { return "subscriptions.password\x00" + id }

func pluginAAD(id string, i int) string {
	return "subscriptions.plugins\x00" + id + "\x00" + strconv.Itoa(i)
}

// sealPlugins returns plugins as the plugins column holds them: JSON, each config sealed.
func (s *Store) sealPlugins(id string, plugins []store.Plugin) (string, error) {
	sealed := make([]store.Plugin, len(plugins))
	for i, p := range plugins {
		config, err := s.secrets.Seal(p.Config, pluginAAD(id, i))
		if err != nil {
			return "", err
		}
		sealed[i] = store.Plugin{Name: p.Name, Config: config}
	}
	b, err := json.Marshal(sealed)
	return string(b), err
}

// openPlugins reads the plugins column, opening each config; none is nil.
func (s *Store) openPlugins(id, column string) ([]store.Plugin, error) {
	var plugins []store.Plugin
	if err := json.Unmarshal([]byte(column), &plugins); err != nil {
		return nil, fmt.Errorf("subscription %q: plugins: %w", id, err)
	}
	for i := range plugins {
		config, err := s.secrets.Open(plugins[i].Config, pluginAAD(id, i))
		if err != nil {
			return nil, fmt.Errorf("subscription %q: plugins[%d] (%s): config: %w", id, i, plugins[i].Name, err)
		}
		plugins[i].Config = config
	}
	if len(plugins) == 0 {
		return nil, nil
	}
	return plugins, nil
}

// reseal checks every stored secret at Open: each must open (its key given, its value intact),
// and each not stored as the box stores values now (under a previous key, or in clear from
// before encryption was turned on, or sealed when encryption is being turned off) is sealed
// again. It runs in one transaction that holds this schema's migration lock and locks the rows
// it rewrites, so that replicas that start at once do it once. (PostgreSQL leaves the old row
// versions behind until VACUUM reclaims them.)
func (s *Store) reseal(ctx context.Context) error {
	log := s.log
	type row struct{ id, password, plugins string }
	var (
		stale   []row
		missing map[string][]string // key id -> subscriptions that need it
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		stale, missing = nil, map[string][]string{}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+advisoryKeys+")", "webhookgw migrate"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT id, password, plugins FROM subscriptions ORDER BY created_at, id FOR UPDATE")
		if err != nil {
			return fmt.Errorf("stored secrets: %w", err)
		}
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.password, &r.plugins); err != nil {
				rows.Close()
				return fmt.Errorf("stored secrets: %w", err)
			}
			fresh, err := s.checkSecrets(r.id, r.password, r.plugins)
			var ke *secretbox.KeyError
			switch {
			case errors.As(err, &ke):
				missing[ke.ID] = append(missing[ke.ID], r.id)
			case err != nil:
				rows.Close()
				return fmt.Errorf("stored secrets: %w", err)
			case !fresh:
				stale = append(stale, r)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("stored secrets: %w", err)
		}
		if len(missing) > 0 {
			return missingKeys(missing)
		}
		for _, r := range stale {
			password, err := s.secrets.Open(r.password, passwordAAD(r.id))
			if err != nil {
				return err
			}
			plugins, err := s.openPlugins(r.id, r.plugins)
			if err != nil {
				return err
			}
			if password, err = s.secrets.Seal(password, passwordAAD(r.id)); err != nil {
				return err
			}
			column, err := s.sealPlugins(r.id, plugins)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE subscriptions SET password = $1, plugins = $2 WHERE id = $3", password, column, r.id); err != nil {
				return fmt.Errorf("stored secrets: sealing again: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch cur := s.secrets.Current(); {
	case len(stale) == 0:
		if cur != "" {
			log.Info("stored secrets are encrypted", "key_id", cur)
		}
	case cur != "":
		log.Info("stored secrets encrypted again under the current key: keys in store.previous_encryption_keys are no longer needed for them",
			"key_id", cur, "subscriptions", len(stale))
	default:
		log.Warn("stored secrets decrypted: store.encryption_key is not set, so they are now stored in clear",
			"subscriptions", len(stale))
	}
	return nil
}

// checkSecrets opens a row's sealed values and reports whether they are all stored as the box
// stores values now.
func (s *Store) checkSecrets(id, password, plugins string) (fresh bool, err error) {
	if _, err := s.secrets.Open(password, passwordAAD(id)); err != nil {
		return false, fmt.Errorf("subscription %q: password: %w", id, err)
	}
	fresh = s.secrets.Fresh(password)
	var stored []store.Plugin
	if err := json.Unmarshal([]byte(plugins), &stored); err != nil {
		return false, fmt.Errorf("subscription %q: plugins: %w", id, err)
	}
	for i, p := range stored {
		if _, err := s.secrets.Open(p.Config, pluginAAD(id, i)); err != nil {
			return false, fmt.Errorf("subscription %q: plugins[%d] (%s): config: %w", id, i, p.Name, err)
		}
		fresh = fresh && s.secrets.Fresh(p.Config)
	}
	return fresh, nil
}

// missingKeys is the start-up error for secrets sealed under keys the gateway was not given.
func missingKeys(missing map[string][]string) error {
	ids := make([]string, 0, len(missing))
	for id := range missing {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		subs := missing[id]
		parts[i] = fmt.Sprintf("key %s (%d subscriptions, such as %q)", id, len(subs), subs[0])
		if len(subs) == 1 {
			parts[i] = fmt.Sprintf("key %s (subscription %q)", id, subs[0])
		}
	}
	return fmt.Errorf("stored secrets are encrypted under %s, which is neither store.encryption_key nor one of store.previous_encryption_keys: "+
		"start with that key (a key's id is the first 8 hex digits of the SHA-256 of its 32 bytes)", strings.Join(parts, " and "))
}
