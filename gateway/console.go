package gateway

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"path"

	"github.com/gofiber/fiber/v2"
)

// The web console: GET /console serves a page whose script signs in with an admin token and
// works through the management API alone, as a script would. Its files are embedded: nothing is
// fetched from elsewhere.

//go:embed console
var consoleFiles embed.FS

// consolePolicy lets the console's page load its own script and style and call the gateway's
// API, and nothing else: no inline script, no other origin, no framing.
const consolePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleTypes are the content types of the console's files, by extension: fixed here, not
// read from the host's MIME tables, since nosniff makes a browser refuse a script of another.
var consoleTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
}

// consoleAsset is a file of the console, with its version (a hash of its content).
type consoleAsset struct {
	body        []byte
	version     string
	contentType string
}

// consolePage is what the console's page is made from.
type consolePage struct {
	// TraceUI is telemetry.traces.ui_url: a link to a trace, {trace_id} standing for its id.
	TraceUI string
	// Assets maps a file of console/ to its name with a version, for caching.
	Assets map[string]string
}

// consoleRoutes registers GET /console and its files, unless admin.console is off. The page
// and its files need no token: they hold no data (the page carries telemetry.traces.ui_url, to
// link trace ids, and nothing else of the configuration); the script asks for a token to call
// the API.
func (g *Gateway) consoleRoutes(app *fiber.App) {
	if !g.cfg.Admin.Console {
		return
	}
	tmpl := template.Must(template.ParseFS(consoleFiles, "console/index.html"))
	page := consolePage{TraceUI: g.cfg.Telemetry.Traces.UIURL, Assets: map[string]string{}}
	assets := map[string]consoleAsset{}
	entries, err := consoleFiles.ReadDir("console")
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	for _, e := range entries {
		if e.Name() == "index.html" || e.IsDir() {
			continue
		}
		b, _ := consoleFiles.ReadFile("console/" + e.Name())
		sum := sha256.Sum256(b)
		a := consoleAsset{body: b, version: hex.EncodeToString(sum[:6]), contentType: consoleTypes[path.Ext(e.Name())]}
		if a.contentType == "" {
			panic("gateway/console/" + e.Name() + ": no content type for its extension")
		}
		assets[e.Name()] = a
		page.Assets[e.Name()] = "/console/" + e.Name() + "?v=" + a.version
	}
	var html bytes.Buffer
	if err := tmpl.Execute(&html, page); err != nil {
		panic(err) // the template is embedded and tested
	}
	index := html.Bytes()

	secure := func(c *fiber.Ctx) {
		c.Set("Content-Security-Policy", consolePolicy)
		c.Set("X-Content-Type-Options", "nosniff")
		c.Set("X-Frame-Options", "DENY")
		c.Set("Referrer-Policy", "no-referrer")
		c.Set("Cross-Origin-Opener-Policy", "same-origin")
	}
	app.Get("/console", func(c *fiber.Ctx) error {
		secure(c)
		c.Set(fiber.HeaderCacheControl, "no-cache")
		c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
		return c.Send(index)
	})
	app.Get("/console/:asset", func(c *fiber.Ctx) error {
		name := c.Params("asset")
		a, ok := assets[name]
		if !ok {
			return newProblem(fiber.StatusNotFound, "the console has no file "+name)
		}
		secure(c)
		// The page names each file with its version, so that one may be kept for good.
		if c.Query("v") == a.version {
			c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
		} else {
			c.Set(fiber.HeaderCacheControl, "no-cache")
		}
		c.Set(fiber.HeaderContentType, a.contentType)
		return c.Send(a.body)
	})
}
