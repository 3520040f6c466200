package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Problem is an RFC 9457 problem document, the body of every error the API returns.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError says what is wrong with one field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// problemError is an error that the error handler answers with its Problem.
type problemError struct{ Problem }

func (e *problemError) Error() string { return e.Detail }

// newProblem returns an error answered with status, detail and any field errors.
func newProblem(status int, detail string, errs ...FieldError) error {
	return &problemError{Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Errors: errs,
	}}
}

// invalid is the 400 for field errors.
func invalid(errs ...FieldError) error {
	return newProblem(fiber.StatusBadRequest, "the request has invalid fields", errs...)
}

// handleError is the app's error handler: every error becomes a problem document. Errors that
// are not a problem or a *fiber.Error are logged and answered 500 without their text.
func (g *Gateway) handleError(c *fiber.Ctx, err error) error {
	var p *problemError
	var fe *fiber.Error
	switch {
	case errors.As(err, &p):
	case errors.As(err, &fe):
		detail := fe.Message
		if fe.Code == fiber.StatusRequestEntityTooLarge {
			detail = "the request body is larger than this route accepts"
		}
		errors.As(newProblem(fe.Code, detail), &p)
	default:
		g.log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
		errors.As(newProblem(fiber.StatusInternalServerError, "internal error; see the gateway's log"), &p)
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	enc.Encode(p.Problem)
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Status(p.Status).Send(body.Bytes())
}

// decodeJSON decodes the request body strictly into v: a JSON object with no unknown fields
// and nothing after it, at most managementBodyLimit bytes. Its errors are problems naming the
// field at fault. The Content-Type is not checked (curl -d sends a form type): the body must
// simply be JSON.
func decodeJSON(c *fiber.Ctx, v any) error {
	body, err := readBody(c, managementBodyLimit, newProblem(fiber.StatusRequestEntityTooLarge, "the request body is larger than 65536 bytes"))
	if err != nil {
		return err
	}
	return decodeStrictJSON(body, v)
}

// decodeStrictJSON is decodeJSON's decoding, apart from the request for fuzzing.
func decodeStrictJSON(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return newProblem(fiber.StatusBadRequest, "the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return newProblem(fiber.StatusBadRequest, "malformed JSON: more data after the object")
	}
	return nil
}

// marshalJSON is the app's JSON encoder (c.JSON): json.Marshal with a newline after the value,
// as the problem documents end, so that curl's output and a shell prompt stay on lines of their own.
func marshalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func jsonProblem(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return newProblem(fiber.StatusBadRequest, "malformed JSON: "+syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return newProblem(fiber.StatusBadRequest, "the request body must be a JSON object, not "+typ.Value)
		}
		return invalid(FieldError{Field: typ.Field, Message: "must be " + jsonKind(typ.Type.String()) + ", not " + typ.Value})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid(FieldError{Field: field, Message: "unknown field"})
	}
	return newProblem(fiber.StatusBadRequest, "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
}

func jsonKind(goType string) string {
	goType = strings.TrimLeft(goType, "*")
	switch {
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "gateway."), strings.HasPrefix(goType, "struct"):
		return "an object"
	}
	return "a " + goType
}
