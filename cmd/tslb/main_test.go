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

// TestCheckConfigCluster: check-config of a cluster's files checks each
// and then the rules across them.
func TestCheckConfigCluster(t *testing.T) {
	bin := buildTSLB(t)
	dir := "../../config/testdata/cluster/"
	files := []string{dir + "a.yaml", dir + "b.yaml", dir + "c.yaml"}
	out, err := exec.Command(bin, append([]string{"check-config"}, files...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `cluster "edge": 3 files ok together`) {
		t.Fatalf("the three instances: %v\n%s", err, out)
	}
	run := func(args ...string) (string, int) {
		out, err := exec.Command(bin, append([]string{"check-config"}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	// The same instance twice: cross-file error with file and line.
	out2, code := run(files[0], files[1], files[0])
	if code != 2 || !strings.Contains(out2, dir+"a.yaml:26: cluster.id: 1 is also the id of "+dir+"a.yaml") {
		t.Errorf("a, b, a: exit %d\n%s", code, out2)
	}
	// A file with another member list.
	tmp := t.TempDir()
	b, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(tmp, "b.yaml")
	os.WriteFile(other, []byte(strings.Replace(string(b), "address: 198.18.4.13", "address: 198.18.4.23", 1)), 0o644)
	out3, code := run(files[0], other, files[2])
	if code != 2 || !strings.Contains(out3, other+":39: cluster.members[2]: member 3 differs from its entry in "+dir+"a.yaml") {
		t.Errorf("another member list: exit %d\n%s", code, out3)
	}
	// A broken file: its own errors, no cross-file check.
	out4, code := run(files[0], "../../config/testdata/bad/cluster_snat_overlap.yaml")
	if code != 2 || !strings.Contains(out4, "cluster_snat_overlap.yaml:") || !strings.Contains(out4, "not checked across files") {
		t.Errorf("with a broken file: exit %d\n%s", code, out4)
	}
	// One file: no cross-file check (it would pass anyway).
	if out5, code := run(files[0]); code != 0 || strings.Contains(out5, "together") {
		t.Errorf("one file: exit %d\n%s", code, out5)
	}
}
