package config

import (
	"sort"
	"strings"
)

// GetArgs merges a component's `*-arg` values into the defaults k3s sets for it and returns
// `--name=value` arguments sorted by name (k3s: pkg/util/args.go GetArgs):
//
//   - `name=value` replaces k3s's default for name (repeats of it add further values);
//   - `name+=value` appends value after the default (and after earlier values);
//   - `name-=value` puts value before the default;
//   - a bare `name` is `name=true`.
//
// A name given several times becomes that flag repeated, in order.
func GetArgs(defaults map[string]string, extra []string) []string {
	initial := make(map[string]string, len(defaults))
	for k, v := range defaults {
		initial[k] = v
	}
	multi := map[string][]string{}
	for _, raw := range extra {
		name, value, ok := strings.Cut(strings.TrimPrefix(raw, "--"), "=")
		if !ok {
			value = "true"
		}
		clean := strings.TrimRight(name, "-+")
		def, hasDef := initial[clean]
		prev, hasPrev := multi[clean]
		var vals []string
		switch {
		case strings.HasSuffix(name, "+"):
			if hasDef {
				vals = append(vals, def)
			}
			vals = append(vals, prev...)
			vals = append(vals, value)
		case strings.HasSuffix(name, "-"):
			vals = append(vals, value)
			if hasDef {
				vals = append(vals, def)
			}
			vals = append(vals, prev...)
		default:
			if hasPrev {
				vals = append(vals, prev...)
			}
			vals = append(vals, value)
		}
		delete(initial, clean)
		multi[clean] = vals
	}
	for k, v := range initial {
		multi[k] = []string{v}
	}
	keys := make([]string, 0, len(multi))
	for k := range multi {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		for _, v := range multi[k] {
			out = append(out, "--"+strings.TrimPrefix(k, "--")+"="+v)
		}
	}
	return out
}

// ArgValue is the value of the first `name=...` among extra, or "" (k3s: pkg/util/args.go
// ArgValue).
func ArgValue(name string, extra []string) string {
	for _, raw := range extra {
		k, v, _ := strings.Cut(strings.TrimPrefix(raw, "--"), "=")
		if k == name {
			return v
		}
	}
	return ""
}
