package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// tokenSet holds bearer tokens as SHA-256 digests, so that checking one takes the same time
// whatever its length and whichever token, if any, it matches.
type tokenSet struct {
	digests [][sha256.Size]byte
}

func newTokenSet(tokens []string) *tokenSet {
	ts := &tokenSet{}
	for _, t := range tokens {
		ts.digests = append(ts.digests, sha256.Sum256([]byte(t)))
	}
	return ts
}

// allows reports whether an Authorization header value carries one of the tokens.
func (ts *tokenSet) allows(authorization string) bool {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(token)))
	match := 0
	for i := range ts.digests {
		match |= subtle.ConstantTimeCompare(d[:], ts.digests[i][:])
	}
	return match == 1
}

// requireAdmin answers 401 unless the request carries an admin token.
func (g *Gateway) requireAdmin(c *fiber.Ctx) error {
	if !g.admin.allows(c.Get(fiber.HeaderAuthorization)) {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="webhook-gateway"`)
		return newProblem(fiber.StatusUnauthorized, "a valid admin token is required: Authorization: Bearer <token>")
	}
	return c.Next()
}
