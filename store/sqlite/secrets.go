package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

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
// again. Rewritten values overwrite the old ones in the file (secure_delete for this
// transaction, then a checkpoint), so that what they held is not left behind.
func (s *Store) reseal(ctx context.Context, log *slog.Logger) error {
	type row struct{ id, password, plugins string }
	var stale []row
	missing := map[string][]string{} // key id -> subscriptions that need it
	err := func() error {
		rows, err := s.write.QueryContext(ctx, "SELECT id, password, plugins FROM subscriptions ORDER BY created_at, id")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.password, &r.plugins); err != nil {
				return err
			}
			fresh, err := s.checkSecrets(r.id, r.password, r.plugins)
			var ke *secretbox.KeyError
			switch {
			case errors.As(err, &ke):
				missing[ke.ID] = append(missing[ke.ID], r.id)
			case err != nil:
				return err
			case !fresh:
				stale = append(stale, r)
			}
		}
		return rows.Err()
	}()
	if err != nil {
		return fmt.Errorf("stored secrets: %w", err)
	}
	if len(missing) > 0 {
		return missingKeys(missing)
	}
	if len(stale) == 0 {
		if log != nil && s.secrets.Current() != "" {
			log.Info("stored secrets are encrypted", "key_id", s.secrets.Current())
		}
		return nil
	}
	if _, err := s.write.ExecContext(ctx, "PRAGMA secure_delete = ON"); err != nil {
		return err
	}
	err = s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
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
			if _, err := tx.ExecContext(ctx, "UPDATE subscriptions SET password = ?, plugins = ? WHERE id = ?", password, column, r.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		_, err = s.write.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	}
	_, offErr := s.write.ExecContext(ctx, "PRAGMA secure_delete = OFF")
	if err = errors.Join(err, offErr); err != nil {
		return fmt.Errorf("stored secrets: sealing again: %w", err)
	}
	if log != nil {
		if cur := s.secrets.Current(); cur != "" {
			log.Info("stored secrets encrypted again under the current key: keys in store.previous_encryption_keys are no longer needed for them",
				"key_id", cur, "subscriptions", len(stale))
		} else {
			log.Warn("stored secrets decrypted: store.encryption_key is not set, so they are now stored in clear",
				"subscriptions", len(stale))
		}
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
