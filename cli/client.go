package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
)

// answer is a 2xx answer from the gateway.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// problem is the RFC 9457 problem document the gateway answers errors with.
type problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// apiError is the gateway's error answer, already reported on stderr.
type apiError struct {
	status  int
	problem problem
}

func (e *apiError) Error() string { return fmt.Sprintf("the gateway answered %d", e.status) }

// request is one call to the gateway: method, a path under its base URL with its query, a JSON
// body (nil: none) and the bearer token to send.
type request struct {
	method string
	path   string // escaped: url.PathEscape each id in it
	query  url.Values
	body   []byte
	token  string
	base   *url.URL // nil: the session's
	// tokenHint names where the token comes from, for a 401 when none was sent.
	tokenHint string
}

// do sends req. It returns the answer when it is 2xx; otherwise it reports the problem on
// stderr and returns the exit code: ExitAPI for an error answer, ExitUnreachable when the
// gateway could not be reached, ExitInterrupted when ctx ended first. err is an *apiError for
// an error answer.
func (s *session) do(ctx context.Context, req request) (*answer, int, error) {
	base := req.base
	if base == nil {
		base = s.base
	}
	target := base.String() + req.path // req.path is escaped already
	if q := req.query.Encode(); q != "" {
		target += "?" + q
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, target, body)
	if err != nil {
		return nil, s.errorf(ExitUsage, "%v", err), err
	}
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", "webhook-gateway-cli/"+s.p.Version)
	if req.token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.token)
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, s.errorf(ExitInterrupted, "interrupted"), err
		}
		return nil, s.errorf(ExitUnreachable, "cannot reach the gateway at %s: %v", base.Redacted(), unwrapURLError(err)), err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return nil, s.errorf(ExitInterrupted, "interrupted"), err
		}
		return nil, s.errorf(ExitUnreachable, "reading the gateway's answer: %v", unwrapURLError(err)), err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return &answer{status: resp.StatusCode, header: resp.Header, body: data}, ExitOK, nil
	}
	e := &apiError{status: resp.StatusCode}
	if json.Unmarshal(data, &e.problem) != nil || e.problem.Title == "" {
		e.problem = problem{Title: http.StatusText(resp.StatusCode), Status: resp.StatusCode, Detail: strings.TrimSpace(string(truncate(data, 300)))}
	}
	hint := ""
	if req.token == "" {
		hint = req.tokenHint
		if hint == "" {
			hint = "--token or $" + EnvAdminToken
		}
	}
	s.reportProblem(resp.StatusCode, e.problem, hint)
	return nil, ExitAPI, e
}

// reportProblem prints an error answer on stderr: status and title, detail, and one line per
// field error. tokenHint, when not empty, says where a token would come from: none was sent.
func (s *session) reportProblem(status int, p problem, tokenHint string) {
	w := s.p.Stderr
	fmt.Fprintf(w, "gateway: %s: %d %s", s.fs.Name(), status, p.Title)
	if p.Detail != "" {
		fmt.Fprintf(w, ": %s", p.Detail)
	}
	fmt.Fprintln(w)
	for _, fe := range p.Errors {
		fmt.Fprintf(w, "  %s: %s\n", fe.Field, fe.Message)
	}
	if status == http.StatusUnauthorized && tokenHint != "" {
		fmt.Fprintf(w, "  (no token was sent: set %s)\n", tokenHint)
	}
}

// unwrapURLError drops the *url.Error's "Get \"http://…\":" prefix, which repeats the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return append(b[:n:n], "…"...)
	}
	return b
}

// pages gets a list, and with all the pages after it through their Link headers. It returns
// the items, and the next page's link when there is one it did not follow.
func (s *session) pages(ctx context.Context, req request, all bool) (items []json.RawMessage, next string, code int) {
	for {
		a, code, _ := s.do(ctx, req)
		if code != ExitOK {
			return nil, "", code
		}
		var page []json.RawMessage
		if err := json.Unmarshal(a.body, &page); err != nil {
			return nil, "", s.errorf(ExitAPI, "the gateway's answer is not a JSON array: %v", err)
		}
		items = append(items, page...)
		next = nextLink(a.header)
		if next == "" || !all {
			return items, next, ExitOK
		}
		u, err := url.Parse(next)
		if err != nil {
			return nil, "", s.errorf(ExitAPI, "the gateway's Link header: %v", err)
		}
		req.path = strings.TrimPrefix(u.EscapedPath(), s.base.EscapedPath())
		req.query = u.Query()
	}
}

// nextLink returns the target of a Link header's rel="next", or "".
func nextLink(h http.Header) string {
	for _, v := range h.Values("Link") {
		for _, link := range strings.Split(v, ",") {
			target, params, ok := strings.Cut(link, ";")
			if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				continue
			}
			target = strings.TrimSpace(target)
			if strings.HasPrefix(target, "<") && strings.HasSuffix(target, ">") {
				return target[1 : len(target)-1]
			}
		}
	}
	return ""
}

// printJSON prints the API's answer as it came, newline-terminated.
func (s *session) printJSON(body []byte) {
	body = bytes.TrimRight(body, "\n")
	s.p.Stdout.Write(append(body, '\n'))
}

// printJSONArray prints items as one JSON array, newline-terminated.
func (s *session) printJSONArray(items []json.RawMessage) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it)
	}
	b.WriteString("]\n")
	s.p.Stdout.Write(b.Bytes())
}

// table is an aligned table on stdout, or a list of "Name  value" lines.
type table struct{ w *tabwriter.Writer }

func (s *session) newTable() table {
	return table{tabwriter.NewWriter(s.p.Stdout, 0, 0, 2, ' ', 0)}
}

// row writes one row; an empty cell is shown as "-".
func (t table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cells[i])
	}
	fmt.Fprintln(t.w, strings.Join(cells, "\t"))
}

func (t table) flush() { t.w.Flush() }

// decode decodes a 2xx answer for a table; a body the table cannot read is an error, exit 1.
func (s *session) decode(body []byte, v any) int {
	if err := json.Unmarshal(body, v); err != nil {
		return s.errorf(ExitAPI, "reading the gateway's answer: %v", err)
	}
	return ExitOK
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
