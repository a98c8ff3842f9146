package gateway_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"pec/gateway/api"
)

// tsaRoutes are the routes of the tsa listener, which openapi.yaml
// describes in its introduction rather than as paths (they need no client
// certificate and answer RFC 3161 or the tlog-tiles formats).
var tsaRoutes = map[string]string{
	"/tsa":                    "POST /tsa",
	"GET /checkpoint":         "/checkpoint",
	"GET /checkpoints/{name}": "/checkpoints/{size}",
	"GET /tile/":              "/tile/",
	"GET /proof/consistency":  "/proof/consistency",
	"GET /log-certificates":   "/log-certificates",
	// The ops listener's profiles (net/http/pprof), for operators.
	"GET /debug/pprof/":        "/debug/pprof/",
	"GET /debug/pprof/cmdline": "/debug/pprof/",
	"GET /debug/pprof/profile": "/debug/pprof/",
	"GET /debug/pprof/symbol":  "/debug/pprof/",
	"GET /debug/pprof/trace":   "/debug/pprof/",
}

// registeredRoutes are the patterns the package's source gives to
// ServeMux.Handle and HandleFunc and to its route helpers: "GET /v1/inbox",
// or "/v1/timestamps" for every method.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(node ast.Node) bool {
			call, ok := node.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			var fn string
			switch f := call.Fun.(type) {
			case *ast.SelectorExpr:
				fn = f.Sel.Name
			case *ast.Ident:
				fn = f.Name
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING || (fn != "Handle" && fn != "HandleFunc" && fn != "route") {
				return true
			}
			pattern, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pattern)
			return true
		})
	}
	return out
}

// TestRoutesDocumented: every route the gateway registers on the api and
// ops listeners is a path and method of openapi.yaml with the same
// wildcards, every documented operation is registered, and the tsa
// listener's routes are named in the introduction; the exchange routes
// answer at their documented paths (not a routing 404 or 405).
func TestRoutesDocumented(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Info  struct{ Description string } `yaml:"info"`
		Paths map[string]map[string]any    `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{} // "GET /v1/inbox"
	for path, item := range doc.Paths {
		for k := range item {
			if slices.Contains([]string{"get", "put", "post", "delete", "patch", "head", "options"}, k) {
				documented[strings.ToUpper(k)+" "+path] = true
			}
		}
	}

	routes := registeredRoutes(t)
	if len(routes) < 30 || !slices.Contains(routes, "POST /v1/exchanges") || !slices.Contains(routes, "GET /metrics") {
		t.Fatalf("the source's routes: %v", routes)
	}
	registered := map[string]bool{}
	for _, pattern := range routes {
		if pattern == "/v1/" {
			continue // the api listener's subtree, served by the /v1 mux
		}
		if mention, ok := tsaRoutes[pattern]; ok {
			if !strings.Contains(doc.Info.Description, mention) {
				t.Errorf("tsa listener route %s: the introduction does not name %s", pattern, mention)
			}
			continue
		}
		method, path, ok := strings.Cut(pattern, " ")
		if !ok { // every method: documented with at least one
			path = method
			found := false
			for op := range documented {
				if strings.HasSuffix(op, " "+path) {
					registered[op], found = true, true
				}
			}
			if !found {
				t.Errorf("route %s (any method) is not in openapi.yaml", pattern)
			}
			continue
		}
		registered[pattern] = true
		if !documented[pattern] {
			t.Errorf("route %s is not in openapi.yaml", pattern)
		}
	}
	for op := range documented {
		if !registered[op] {
			t.Errorf("openapi.yaml documents %s, which no route serves", op)
		}
	}

	// The exchange routes, as documented, reach their handlers.
	n := newExchangeNode(t, nodeOptions{noServer: true})
	id := strings.Repeat("0", 32)
	for op := range documented {
		method, path, _ := strings.Cut(op, " ")
		if !strings.HasPrefix(path, "/v1/exchanges") && path != "/v1/inbox" {
			continue
		}
		path = strings.NewReplacer("{id}", id, "{n}", "0").Replace(path)
		resp, body := n.do(t, "a", method, path, nil, nil)
		if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotFound && strings.Contains(string(body), string(api.TypeNotFound)+`"`) && strings.Contains(string(body), "no such route") {
			t.Errorf("%s: %s %s", op, resp.Status, body)
		}
	}
}
