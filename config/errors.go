package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a configuration, located by file, line and key
// path.
type Error struct {
	// File is the configuration's source path (Config.Source).
	File string
	// Line is the 1-based line of the offending key or value, or of the
	// enclosing mapping for a missing key; 0 if unknown (a Config built
	// in Go).
	Line int
	// Key is the key path, such as "services[0].backends[1].address"; ""
	// for problems with the whole document.
	Key string
	// Msg says what is wrong.
	Msg string
}

// Error formats e as "FILE:LINE: KEY: MSG", leaving out the line when it is
// 0 and the key when it is empty.
func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration, sorted by line.
type Errors []Error

// Error returns the errors one per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// sort orders es by line, keeping the discovery order of equal lines.
func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b Error) int { return cmp.Compare(a.Line, b.Line) })
}
