// Package config turns k3s's configuration (config.yaml, its drop-ins, the environment and the
// command line) into the server settings the k3s role runs with.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	yaml "sigs.k8s.io/yaml/goyaml.v2"
)

// DefaultConfigFile is where k3s reads its configuration unless --config or K3S_CONFIG_FILE
// names another file (k3s: pkg/cli/cmds/config.go, ConfigFlag's default).
const DefaultConfigFile = "/etc/rancher/k3s/config.yaml"

// ConfigEnv names the configuration file too, and wins over --config
// (k3s: pkg/configfilearg/parser.go findConfigFileFlag, EnvName K3S_CONFIG_FILE).
const ConfigEnv = "K3S_CONFIG_FILE"

// dropinFiles lists the *.yaml/*.yml files of file+".d" in directory order (os.ReadDir sorts by
// name), skipping directories and other suffixes (k3s: pkg/configfilearg/parser.go dotDFiles; the
// suffix check is case-insensitive there, util.HasSuffixI).
func dropinFiles(file string) ([]string, error) {
	entries, err := os.ReadDir(file + ".d")
	if os.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		lower := strings.ToLower(e.Name())
		if e.IsDir() || !(strings.HasSuffix(lower, ".yaml") || strings.HasSuffix(lower, ".yml")) {
			continue
		}
		out = append(out, filepath.Join(file+".d", e.Name()))
	}
	return out, nil
}

// ReadConfigFile flattens the configuration file and its drop-ins into `--key=value` arguments,
// in the order keys were first seen; a list becomes the flag repeated, a key ending in `+`
// appends to what earlier files gave that key, any other key replaces it
// (k3s: pkg/configfilearg/parser.go readConfigFile). It is an error (os.IsNotExist) when neither
// the file nor any drop-in exists.
func ReadConfigFile(file string) ([]string, error) {
	files, err := dropinFiles(file)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(file); err != nil {
		if !(os.IsNotExist(err) && len(files) > 0) {
			return nil, err
		}
	} else {
		files = append([]string{file}, files...)
	}

	var (
		seen   = map[string]bool{}
		order  []string
		values = map[string]any{}
	)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc yaml.MapSlice
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, item := range doc {
			k := toString(item.Key)
			appendTo := strings.HasSuffix(k, "+")
			k = strings.TrimSuffix(k, "+")
			if !seen[k] {
				seen[k] = true
				order = append(order, k)
			}
			if old, ok := values[k]; ok && appendTo {
				values[k] = append(toSlice(old), toSlice(item.Value)...)
			} else {
				values[k] = item.Value
			}
		}
	}

	var out []string
	for _, k := range order {
		prefix := "--"
		if len(k) == 1 {
			prefix = "-"
		}
		if list, ok := values[k].([]any); ok {
			for _, v := range list {
				out = append(out, prefix+k+"="+toString(v))
			}
		} else {
			out = append(out, prefix+k+"="+toString(values[k]))
		}
	}
	return out, nil
}

// toSlice mirrors k3s's toSlice: a string or a list as is, anything else as its string form
// unless that is blank (k3s: pkg/configfilearg/parser.go).
func toSlice(v any) []any {
	switch t := v.(type) {
	case string:
		return []any{t}
	case []any:
		return t
	default:
		s := strings.TrimSpace(toString(v))
		if s == "" {
			return nil
		}
		return []any{s}
	}
}

// toString renders a YAML scalar the way wrangler's convert.ToString does for the values a
// config file can hold (k3s uses it in pkg/configfilearg/parser.go).
func toString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case bool:
		return strconv.FormatBool(t)
	case int:
		return strconv.Itoa(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case uint64:
		return strconv.FormatUint(t, 10)
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	default:
		return fmt.Sprintf("%v", v)
	}
}

var flagNameRE = regexp.MustCompile("^-+([^=]*)=")

// StripInvalidFlags keeps the config-file arguments that name a flag of the command and warns
// about each other one with k3s's own words (k3s: pkg/configfilearg/parser.go
// stripInvalidFlags: "Unknown flag %s found in config.yaml, skipping").
func StripInvalidFlags(args []string, valid func(name string) bool, warn func(string)) []string {
	var out []string
	for _, a := range args {
		name := a
		if m := flagNameRE.FindStringSubmatch(a); m != nil {
			name = m[1]
		}
		if valid(name) {
			out = append(out, a)
		} else {
			warn(fmt.Sprintf("Unknown flag %s found in config.yaml, skipping", strings.Split(a, "=")[0]))
		}
	}
	return out
}

// findConfigFile is the K3S_CONFIG_FILE value, else --config/-c from the arguments, else the
// default; set says whether it was named explicitly
// (k3s: pkg/configfilearg/parser.go findConfigFileFlag).
func findConfigFile(args []string, getenv func(string) string) string {
	if v := getenv(ConfigEnv); v != "" {
		return v
	}
	for i, a := range args {
		for _, f := range []string{"--config", "-c"} {
			if a == f {
				if i+1 < len(args) {
					return args[i+1]
				}
				return ""
			}
			if strings.HasPrefix(a, f+"=") {
				return a[len(f)+1:]
			}
		}
	}
	return DefaultConfigFile
}

// ExpandArgs inserts the configuration file's flags right after the `server` subcommand, so that
// flags given on the command line come later and win (or, for lists, add to the file's)
// (k3s: pkg/configfilearg/parser.go Parse; pkg/configfilearg/defaultparser.go MustParse with
// After: server, agent, ...). A missing configuration file is not an error; unknown keys are
// warned about and dropped.
func ExpandArgs(args []string, getenv func(string) string, valid func(string) bool, warn func(string)) ([]string, error) {
	at := -1
	for i, a := range args {
		if a == "server" {
			at = i
			break
		}
	}
	if at < 0 {
		return args, nil
	}
	file := findConfigFile(args, getenv)
	if file == "" {
		return args, nil
	}
	values, err := ReadConfigFile(file)
	if err != nil {
		if os.IsNotExist(err) {
			return args, nil
		}
		return nil, fmt.Errorf("reading configuration %s: %w", file, err)
	}
	values = StripInvalidFlags(values, valid, warn)
	out := append([]string{}, args[:at+1]...)
	out = append(out, values...)
	return append(out, args[at+1:]...), nil
}
