package bench

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// freshSchema creates a schema of its own, bench_<random>, in the database dsn names, and
// returns a DSN whose connections use it (its search_path), its name, and drop, which drops it
// with everything in it. Runs never see each other's data, nor the data of a gateway that uses
// the database.
func freshSchema(ctx context.Context, dsn string) (schemaDSN, name string, drop func() error, err error) {
	name = "bench_" + randomHex(6)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", nil, fmt.Errorf("--dsn: %w", err)
		}
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
		schemaDSN = u.String()
	} else {
		schemaDSN = dsn + " search_path=" + name // key=value form: the last one wins
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", "", nil, fmt.Errorf("postgres: creating schema %s: %w", name, err)
	}
	drop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("postgres: dropping schema %s: %w", name, err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			return fmt.Errorf("postgres: dropping schema %s: %w", name, err)
		}
		return nil
	}
	return schemaDSN, name, drop, nil
}
