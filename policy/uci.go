package policy

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Section is one "config TYPE 'NAME'" block of a UCI file.
type Section struct {
	Type    string
	Name    string // empty for anonymous sections
	Line    int
	Options map[string]Value
}

// Value is an option or list value with the line it came from.
type Value struct {
	Values []string // one element for "option", one or more for "list"
	Line   int
	IsList bool
}

// ParseError names the file, line and reason of a bad config.
type ParseError struct {
	File   string
	Line   int
	Reason string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// ParseUCI reads OpenWrt UCI syntax (the format of /etc/config/*):
//
//	config TYPE ['NAME']
//		option KEY 'VALUE'
//		list KEY 'VALUE'
//
// Comments start with #. Values may be single-quoted, double-quoted or bare.
func ParseUCI(r io.Reader, file string) ([]Section, error) {
	var (
		sections []Section
		cur      *Section
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		words, err := splitUCI(sc.Text())
		if err != nil {
			return nil, &ParseError{file, line, err.Error()}
		}
		if len(words) == 0 {
			continue
		}
		switch words[0] {
		case "package":
			continue
		case "config":
			if len(words) < 2 || len(words) > 3 {
				return nil, &ParseError{file, line, "want: config TYPE ['NAME']"}
			}
			s := Section{Type: words[1], Line: line, Options: map[string]Value{}}
			if len(words) == 3 {
				s.Name = words[2]
			}
			sections = append(sections, s)
			cur = &sections[len(sections)-1]
		case "option", "list":
			if cur == nil {
				return nil, &ParseError{file, line, words[0] + " outside any config section"}
			}
			if len(words) != 3 {
				return nil, &ParseError{file, line, "want: " + words[0] + " KEY 'VALUE'"}
			}
			key, val := words[1], words[2]
			prev, seen := cur.Options[key]
			if words[0] == "option" {
				if seen && prev.IsList {
					return nil, &ParseError{file, line, fmt.Sprintf("%q is a list (line %d), not an option", key, prev.Line)}
				}
				cur.Options[key] = Value{Values: []string{val}, Line: line}
				continue
			}
			if seen && !prev.IsList {
				return nil, &ParseError{file, line, fmt.Sprintf("%q is an option (line %d), not a list", key, prev.Line)}
			}
			prev.Values = append(prev.Values, val)
			prev.IsList = true
			if !seen {
				prev.Line = line
			}
			cur.Options[key] = prev
		default:
			return nil, &ParseError{file, line, fmt.Sprintf("unknown keyword %q (want config, option or list)", words[0])}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{file, line, err.Error()}
	}
	return sections, nil
}

// splitUCI splits a line into shell-like words, honouring quotes and comments.
func splitUCI(s string) ([]string, error) {
	var (
		words []string
		b     strings.Builder
		in    bool
		quote byte
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
				continue
			}
			if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				c = s[i]
			}
			b.WriteByte(c)
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == '#':
			i = len(s)
		case c == ' ' || c == '\t' || c == '\r':
			if in {
				words = append(words, b.String())
				b.Reset()
				in = false
			}
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			in = true
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		words = append(words, b.String())
	}
	return words, nil
}
