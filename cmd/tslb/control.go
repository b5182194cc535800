package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tslb/config"
	"tslb/lb"
	"tslb/lb/statuspage"
)

// The control socket is a unix stream socket (control.socket, default
// /run/tslb.sock, mode 0600: root only). One command per connection, one
// line: "reload", "drain" or "status". The answer is one line: "ok" or
// "error: <message>"; for "status" it is the status document (lb.Status,
// as /status.json, compact JSON on one line) or "error: ...". "drain"
// answers once the graceful stop has begun (routes withdrawn on a cluster
// instance); tslb exits when it ends.

func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// A socket left by a crashed tslb: remove it unless something answers.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another tslb is listening", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// controlCommands are the commands of the control socket.
type controlCommands struct {
	reload func() error
	drain  func() error
	status func() ([]byte, error) // one line of JSON
}

func serveControl(ln net.Listener, cmds controlCommands, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Error("control socket", "err", err)
			}
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil && line == "" {
				return
			}
			var run func() error
			switch strings.TrimSpace(line) {
			case "reload":
				run = cmds.reload
			case "drain":
				run = cmds.drain
			case "status":
				if cmds.status == nil {
					fmt.Fprintln(c, "error: status not available")
					return
				}
				doc, err := cmds.status()
				if err != nil {
					fmt.Fprintf(c, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
					return
				}
				c.Write(append(doc, '\n'))
				return
			default:
				fmt.Fprintf(c, "error: unknown command %q (known: reload, drain, status)\n", strings.TrimSpace(line))
				return
			}
			if err := run(); err != nil {
				fmt.Fprintf(c, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
				return
			}
			fmt.Fprintln(c, "ok")
		}()
	}
}

// cmdReload asks a running tslb to reload its configuration file.
func cmdReload(args []string) int { return controlCommand("reload", args) }

// cmdDrain asks a running tslb to stop gracefully, as SIGTERM does: a
// cluster instance withdraws its routes first and leaves the others its
// new flows; open flows go on until they end or shutdown.timeout passes.
func cmdDrain(args []string) int { return controlCommand("drain", args) }

// cmdStatus asks a running tslb for its status and prints it as tables
// (-json: the document as it came).
func cmdStatus(args []string) int { return status(args, os.Stdout) }

func status(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	sock := fs.String("socket", config.DefaultControlSocket, "control socket of the running tslb")
	asJSON := fs.Bool("json", false, "print the status document (as /status.json) instead of tables")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	line, err := ask(*sock, "status")
	if err != nil {
		fmt.Fprintf(os.Stderr, "tslb status: %v\n", err)
		return 1
	}
	if strings.HasPrefix(line, "error:") {
		fmt.Fprintf(os.Stderr, "tslb status: %s\n", line)
		return 1
	}
	var st lb.Status
	if err := json.Unmarshal([]byte(line), &st); err != nil {
		fmt.Fprintf(os.Stderr, "tslb status: bad answer: %v\n", err)
		return 1
	}
	if st.Schema != lb.StatusSchema {
		fmt.Fprintf(os.Stderr, "tslb status: schema %q, this tslb reads %q\n", st.Schema, lb.StatusSchema)
		return 1
	}
	if *asJSON {
		var buf bytes.Buffer
		json.Indent(&buf, []byte(line), "", " ")
		buf.WriteByte('\n')
		out.Write(buf.Bytes())
		return 0
	}
	if err := statuspage.WriteText(out, &st); err != nil {
		fmt.Fprintf(os.Stderr, "tslb status: %v\n", err)
		return 1
	}
	return 0
}

// ask sends one command to the control socket at sock and returns the
// answer's line.
func ask(sock, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintln(c, cmd)
	r := bufio.NewReaderSize(c, 64<<10)
	line, err := r.ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// controlCommand sends one command to a running tslb's control socket.
func controlCommand(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sock := fs.String("socket", config.DefaultControlSocket, "control socket of the running tslb")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	line, err := ask(*sock, name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tslb %s: %v\n", name, err)
		return 1
	}
	if line != "ok" {
		fmt.Fprintf(os.Stderr, "tslb %s: %s\n", name, line)
		return 1
	}
	fmt.Printf("tslb %s: ok\n", name)
	return 0
}
