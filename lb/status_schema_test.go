package lb

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strings"
	"testing"
)

// TestStatusSchemaDocumented checks that every field of the status
// document (Status and every struct it holds) has a JSON name and is
// documented: by a comment of its own, or named in the comment of an
// earlier field of its struct (one comment for a group of fields).
func TestStatusSchemaDocumented(t *testing.T) {
	fset := token.NewFileSet()
	structs := map[string]*ast.StructType{}
	for _, file := range []string{"status.go", "clustermetrics.go"} {
		f, err := parser.ParseFile(fset, file, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					structs[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	// Walk the types the document holds, from Status.
	seen := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Map {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || rt.PkgPath() != reflect.TypeFor[Status]().PkgPath() || seen[rt.Name()] {
			return
		}
		seen[rt.Name()] = true
		st := structs[rt.Name()]
		if st == nil {
			t.Errorf("%s: not declared in status.go or clustermetrics.go", rt.Name())
			return
		}
		var group string
		for _, f := range st.Fields.List {
			if f.Doc != nil {
				group = f.Doc.Text()
			}
			for _, name := range f.Names {
				if f.Doc == nil && f.Comment == nil && !strings.Contains(group, name.Name) {
					t.Errorf("%s.%s: not documented", rt.Name(), name.Name)
				}
			}
		}
		for i := range rt.NumField() {
			sf := rt.Field(i)
			if tag := sf.Tag.Get("json"); tag == "" || tag == "-" {
				t.Errorf("%s.%s: no JSON name", rt.Name(), sf.Name)
			}
			walk(sf.Type)
		}
	}
	walk(reflect.TypeFor[Status]())
	if len(seen) < 10 {
		t.Errorf("walked %d types of the status document, want at least 10", len(seen))
	}
}
