package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// buildTSLB builds this command once per test binary run.
func buildTSLB(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "tslb")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

var wantRE = regexp.MustCompile(`^# want: (\S+) line (\d+)`)

// TestCheckConfig runs `tslb check-config` on every broken file in
// config/testdata/bad: each must exit 2 and print "FILE:LINE: KEY: ..."
// with the key and line its first comment names. The example passes.
func TestCheckConfig(t *testing.T) {
	bin := buildTSLB(t)
	files, err := filepath.Glob("../../config/testdata/bad/*.yaml")
	if err != nil || len(files) < 15 {
		t.Fatalf("want at least 15 broken configs, found %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(fh)
			sc.Scan()
			fh.Close()
			m := wantRE.FindStringSubmatch(sc.Text())
			if m == nil {
				t.Fatalf("first line %q is not '# want: KEY line N'", sc.Text())
			}
			out, err := exec.Command(bin, "check-config", f).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want code 2; output:\n%s", err, out)
			}
			want := f + ":" + m[2] + ": " + m[1] + ":"
			if m[1] == `""` { // file-level errors (syntax, empty) name no key
				want = f + ":" + m[2] + ":"
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		})
	}
	out, err := exec.Command(bin, "check-config", "../../config/example.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": ok") {
		t.Errorf("example config: %v\n%s", err, out)
	}
}

// TestBinaryDoesNotLinkTesting checks that the shipped binary does not
// depend on package testing (the lab it links for demo, lab and bench
// must not pull the test framework in).
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "testing" || strings.HasPrefix(p, "testing/") {
			t.Errorf("tslb links %s", p)
		}
	}
}
