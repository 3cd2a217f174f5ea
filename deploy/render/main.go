// Command render renders the Helm chart under deploy/helm/trading the way
// `helm template` does, for CI on machines where the helm binary cannot be
// installed (no registry this project may use ships it; see
// docs/kubernetes.md, "Validating the chart here"). Operators use the real
// helm; this renderer exists so that CI renders and schema-checks the very
// same templates.
//
// It is Helm's own engine, Go's text/template, with the subset of Helm's
// built-in objects and Sprig functions the chart uses; every function the
// chart calls must be defined here, so a template using anything else fails
// to parse instead of rendering differently. Only the standard library.
//
// Input: a JSON file (made by deploy/render/render.py from Chart.yaml, the
// merged values files and the release options, since the standard library
// has no YAML parser) of the form
//
//	{"Values": {...}, "Chart": {"Name": ..., "Version": ..., "AppVersion": ...},
//	 "Release": {"Name": ..., "Namespace": ..., "Service": "Helm", ...},
//	 "Capabilities": {...}}
//
// Output: the rendered manifests on stdout, each template's output preceded by
// "---" and a "# Source:" line, as `helm template` prints them. Partials
// (templates/_*.tpl) define named templates and print nothing. Values are
// rendered with missingkey=zero and "<no value>" removed, as Helm does.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"text/template"
)

// Files is the chart's .Files: read access to files inside the chart directory.
type Files struct{ root string }

func (f Files) read(name string) ([]byte, error) {
	clean := path.Clean("/" + name)[1:]
	return os.ReadFile(filepath.Join(f.root, filepath.FromSlash(clean)))
}

// Get returns a file's content, or "" when it does not exist (as Helm does).
func (f Files) Get(name string) string {
	b, err := f.read(name)
	if err != nil {
		return ""
	}
	return string(b)
}

// Glob returns the chart files matching a pattern (filepath.Match syntax per
// path element, relative to the chart; symbolic links are followed, as Helm
// follows them when it loads a chart), keyed by their path.
func (f Files) Glob(pattern string) map[string]string {
	out := map[string]string{}
	matches, _ := filepath.Glob(filepath.Join(f.root, filepath.FromSlash(pattern)))
	for _, p := range matches {
		info, err := os.Stat(p)
		if err != nil || info.IsDir() {
			continue
		}
		rel, _ := filepath.Rel(f.root, p)
		if b, err := os.ReadFile(p); err == nil {
			out[filepath.ToSlash(rel)] = string(b)
		}
	}
	return out
}

func empty(v interface{}) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String, reflect.Array, reflect.Map, reflect.Slice:
		return rv.Len() == 0
	case reflect.Bool:
		return !rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return rv.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return rv.Float() == 0
	case reflect.Ptr, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

func toString(v interface{}) string {
	switch s := v.(type) {
	case nil:
		return ""
	case string:
		return s
	case []byte:
		return string(s)
	case float64:
		// JSON numbers: integers print without a fraction.
		if s == float64(int64(s)) {
			return fmt.Sprintf("%d", int64(s))
		}
		return fmt.Sprintf("%v", s)
	}
	return fmt.Sprintf("%v", v)
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// toJSON is used for toYaml too: JSON is YAML (flow style), so the rendered
// documents mean the same as Helm's block-style output.
func toJSON(v interface{}) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

func funcs(t **template.Template) template.FuncMap {
	return template.FuncMap{
		"include": func(name string, data interface{}) (string, error) {
			var buf bytes.Buffer
			if err := (*t).ExecuteTemplate(&buf, name, data); err != nil {
				return "", err
			}
			return buf.String(), nil
		},
		"required": func(msg string, v interface{}) (interface{}, error) {
			if empty(v) {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"fail": func(msg string) (string, error) { return "", errors.New(msg) },
		"default": func(def interface{}, given ...interface{}) interface{} {
			if len(given) == 0 || empty(given[0]) {
				return def
			}
			return given[0]
		},
		"empty":    empty,
		"toYaml":   toJSON,
		"toJson":   toJSON,
		"quote":    func(v interface{}) string { return fmt.Sprintf("%q", toString(v)) },
		"toString": toString,
		"indent":   indent,
		"nindent":  func(n int, s string) string { return "\n" + indent(n, s) },
		"b64enc":   func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"trunc": func(n int, s string) string {
			if len(s) > n {
				return s[:n]
			}
			return s
		},
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"lower":      strings.ToLower,
		"base":       path.Base,
		"join": func(sep string, v interface{}) string {
			var parts []string
			rv := reflect.ValueOf(v)
			if rv.Kind() == reflect.Slice {
				for i := 0; i < rv.Len(); i++ {
					parts = append(parts, toString(rv.Index(i).Interface()))
				}
			}
			return strings.Join(parts, sep)
		},
		"list": func(v ...interface{}) []interface{} { return v },
		"dict": func(kv ...interface{}) (map[string]interface{}, error) {
			if len(kv)%2 != 0 {
				return nil, errors.New("dict: odd number of arguments")
			}
			out := map[string]interface{}{}
			for i := 0; i < len(kv); i += 2 {
				out[toString(kv[i])] = kv[i+1]
			}
			return out, nil
		},
		"set": func(m map[string]interface{}, key string, v interface{}) map[string]interface{} {
			m[key] = v
			return m
		},
		"append": func(list interface{}, v interface{}) []interface{} {
			var out []interface{}
			rv := reflect.ValueOf(list)
			if rv.Kind() == reflect.Slice {
				for i := 0; i < rv.Len(); i++ {
					out = append(out, rv.Index(i).Interface())
				}
			}
			return append(out, v)
		},
		"hasKey": func(m map[string]interface{}, key string) bool { _, ok := m[key]; return ok },
		"keys": func(m map[string]interface{}) []string {
			out := make([]string, 0, len(m))
			for k := range m {
				out = append(out, k)
			}
			sort.Strings(out)
			return out
		},
		"has": func(needle interface{}, haystack interface{}) bool {
			rv := reflect.ValueOf(haystack)
			if rv.Kind() != reflect.Slice {
				return false
			}
			for i := 0; i < rv.Len(); i++ {
				if reflect.DeepEqual(rv.Index(i).Interface(), needle) {
					return true
				}
			}
			return false
		},
		"add1":   func(v interface{}) int { return toInt(v) + 1 },
		"add":    func(a, b interface{}) int { return toInt(a) + toInt(b) },
		"int":    toInt,
		"printf": fmt.Sprintf,
	}
}

func toInt(v interface{}) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case string:
		var i int
		_, _ = fmt.Sscanf(n, "%d", &i)
		return i
	}
	return 0
}

func main() {
	chartDir := flag.String("chart", "", "the chart directory (Chart.yaml, templates/)")
	input := flag.String("input", "", "the JSON context (Values, Chart, Release, Capabilities)")
	flag.Parse()
	if *chartDir == "" || *input == "" {
		fmt.Fprintln(os.Stderr, "usage: render -chart DIR -input CONTEXT.json")
		os.Exit(2)
	}
	if err := run(*chartDir, *input); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(chartDir, input string) error {
	raw, err := os.ReadFile(input)
	if err != nil {
		return err
	}
	var ctx map[string]interface{}
	if err := json.Unmarshal(raw, &ctx); err != nil {
		return fmt.Errorf("%s: %w", input, err)
	}
	chart, _ := ctx["Chart"].(map[string]interface{})
	name := toString(chart["Name"])
	if name == "" {
		return errors.New("Chart.Name missing in the context")
	}
	ctx["Files"] = Files{root: chartDir}
	ctx["Template"] = map[string]interface{}{"BasePath": name + "/templates"}

	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	var root *template.Template
	root = template.New(name).Option("missingkey=zero").Funcs(funcs(&root))
	var rendered []string
	for _, p := range paths {
		base := filepath.Base(p)
		if !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".tpl") {
			continue
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		tname := name + "/templates/" + base
		if _, err := root.New(tname).Parse(string(text)); err != nil {
			return err
		}
		if !strings.HasPrefix(base, "_") {
			rendered = append(rendered, tname)
		}
	}
	var out strings.Builder
	for _, tname := range rendered {
		ctx["Template"].(map[string]interface{})["Name"] = tname
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, tname, ctx); err != nil {
			return err
		}
		body := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(body) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", tname, strings.Trim(body, "\n"))
	}
	_, err = os.Stdout.WriteString(out.String())
	return err
}
