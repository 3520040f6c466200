package gateway

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// openAPI is the OpenAPI 3.1 description of every route the gateway serves. The tests check
// the server against it, route by route, both ways.
//
//go:embed openapi.json
var openAPI []byte

// openAPIRoute registers GET /openapi.json, which needs no token.
func (g *Gateway) openAPIRoute(app *fiber.App) {
	app.Get("/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(openAPI)
	})
}
