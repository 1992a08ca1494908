// Command uci is a small stand-in for OpenWrt's uci(1), enough for the
// package's maintainer scripts to be run off a router: get, set, add_list,
// del_list, delete, show and commit, with -q and -X. Configs are read from
// $UCI_CONFIG_DIR (default /etc/config); changes are staged in
// $UCI_CONFIG_DIR/../.uci/PKG until "uci commit", as uci stages them in
// /tmp/.uci. Sections are addressed by name or as @TYPE[N].
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dnsguard/dnsguard/policy"
)

type option struct {
	key    string
	values []string
	list   bool
}

type section struct {
	typ, name string // name is empty for an anonymous section
	options   []option
}

type config struct{ sections []*section }

var errNotFound = errors.New("Entry not found")

func main() {
	quiet, realNames := false, false
	args := os.Args[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-q":
			quiet = true
		case "-X":
			realNames = true
		default:
			fail(quiet, fmt.Errorf("unsupported flag %s", args[0]))
		}
		args = args[1:]
	}
	if len(args) < 1 {
		fail(quiet, errors.New("usage: uci [-q] [-X] COMMAND ARG"))
	}
	if err := run(args[0], args[1:], realNames); err != nil {
		fail(quiet, err)
	}
}

func fail(quiet bool, err error) {
	if !quiet {
		fmt.Fprintln(os.Stderr, "uci:", err)
	}
	os.Exit(1)
}

func confDir() string {
	if d := os.Getenv("UCI_CONFIG_DIR"); d != "" {
		return d
	}
	return "/etc/config"
}

func stagePath(pkg string) string {
	return filepath.Join(filepath.Dir(confDir()), ".uci", pkg)
}

func run(cmd string, args []string, realNames bool) error {
	if len(args) != 1 {
		if cmd == "commit" && len(args) == 0 {
			return errors.New("commit needs a package here")
		}
		return fmt.Errorf("%s: want one argument", cmd)
	}
	path, value, hasValue := strings.Cut(args[0], "=")
	parts := strings.SplitN(path, ".", 3)
	pkg := parts[0]
	c, err := load(pkg)
	if err != nil {
		return err
	}
	switch cmd {
	case "commit":
		staged := stagePath(pkg)
		if _, err := os.Stat(staged); err != nil {
			return nil // nothing staged
		}
		if err := os.Rename(staged, filepath.Join(confDir(), pkg)); err != nil {
			return err
		}
		return nil
	case "show":
		fmt.Print(c.show(pkg, realNames))
		return nil
	}
	if len(parts) < 2 {
		return fmt.Errorf("%s: want PKG.SECTION[.OPTION]", cmd)
	}
	s := c.find(parts[1])
	switch cmd {
	case "get":
		if s == nil {
			return errNotFound
		}
		if len(parts) == 2 {
			fmt.Println(s.typ)
			return nil
		}
		o := s.get(parts[2])
		if o == nil {
			return errNotFound
		}
		fmt.Println(strings.Join(o.values, " "))
		return nil
	case "set", "add_list", "del_list":
		if s == nil || len(parts) != 3 || !hasValue {
			return fmt.Errorf("%s %s: want an existing PKG.SECTION.OPTION=VALUE", cmd, args[0])
		}
		o := s.get(parts[2])
		switch cmd {
		case "set":
			if o == nil {
				s.options = append(s.options, option{key: parts[2]})
				o = &s.options[len(s.options)-1]
			}
			o.values, o.list = []string{value}, false
		case "add_list":
			if o == nil {
				s.options = append(s.options, option{key: parts[2], list: true})
				o = &s.options[len(s.options)-1]
			}
			o.values, o.list = append(o.values, value), true
		case "del_list":
			if o == nil {
				return nil
			}
			o.values = slices.DeleteFunc(o.values, func(v string) bool { return v == value })
			if len(o.values) == 0 {
				s.delete(parts[2])
			}
		}
	case "delete":
		if s == nil {
			return errNotFound
		}
		if len(parts) == 2 {
			c.sections = slices.DeleteFunc(c.sections, func(x *section) bool { return x == s })
		} else if !s.delete(parts[2]) {
			return errNotFound
		}
	default:
		return fmt.Errorf("unsupported command %q", cmd)
	}
	return c.stage(pkg)
}

func load(pkg string) (*config, error) {
	path := stagePath(pkg)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		path = filepath.Join(confDir(), pkg)
		f, err = os.Open(path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return &config{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	secs, err := policy.ParseUCI(f, path)
	if err != nil {
		return nil, err
	}
	c := &config{}
	for _, ps := range secs {
		s := &section{typ: ps.Type, name: ps.Name}
		for k, v := range ps.Options {
			s.options = append(s.options, option{key: k, values: v.Values, list: v.IsList})
		}
		// ParseUCI keeps no option order; the file's line order is it.
		slices.SortFunc(s.options, func(a, b option) int { return ps.Options[a.key].Line - ps.Options[b.key].Line })
		c.sections = append(c.sections, s)
	}
	return c, nil
}

// id is a section's name, or the cfgNNNNNN name uci gives an anonymous one.
func (c *config) id(s *section) string {
	if s.name != "" {
		return s.name
	}
	return fmt.Sprintf("cfg%02x%04x", slices.Index(c.sections, s), len(s.typ))
}

func (c *config) find(ref string) *section {
	if typ, rest, ok := strings.Cut(strings.TrimPrefix(ref, "@"), "["); ok && strings.HasPrefix(ref, "@") {
		n, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
		if err != nil {
			return nil
		}
		var of []*section
		for _, s := range c.sections {
			if s.typ == typ {
				of = append(of, s)
			}
		}
		if n < 0 {
			n += len(of)
		}
		if n < 0 || n >= len(of) {
			return nil
		}
		return of[n]
	}
	for _, s := range c.sections {
		if c.id(s) == ref {
			return s
		}
	}
	return nil
}

func (s *section) get(key string) *option {
	for i := range s.options {
		if s.options[i].key == key {
			return &s.options[i]
		}
	}
	return nil
}

func (s *section) delete(key string) bool {
	n := len(s.options)
	s.options = slices.DeleteFunc(s.options, func(o option) bool { return o.key == key })
	return len(s.options) != n
}

func quote(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }

func (c *config) show(pkg string, realNames bool) string {
	var b strings.Builder
	count := map[string]int{}
	for _, s := range c.sections {
		name := c.id(s)
		if s.name == "" && !realNames {
			name = fmt.Sprintf("@%s[%d]", s.typ, count[s.typ])
		}
		count[s.typ]++
		fmt.Fprintf(&b, "%s.%s=%s\n", pkg, name, s.typ)
		for _, o := range s.options {
			q := make([]string, len(o.values))
			for i, v := range o.values {
				q[i] = quote(v)
			}
			fmt.Fprintf(&b, "%s.%s.%s=%s\n", pkg, name, o.key, strings.Join(q, " "))
		}
	}
	return b.String()
}

func (c *config) stage(pkg string) error {
	var b strings.Builder
	for _, s := range c.sections {
		b.WriteString("\nconfig " + s.typ)
		if s.name != "" {
			b.WriteString(" " + quote(s.name))
		}
		b.WriteString("\n")
		for _, o := range s.options {
			for _, v := range o.values {
				kw := "option"
				if o.list {
					kw = "list"
				}
				fmt.Fprintf(&b, "\t%s %s %s\n", kw, o.key, quote(v))
			}
		}
	}
	path := stagePath(pkg)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
