package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tslb/config"
)

// The control socket is a unix stream socket (control.socket, default
// /run/tslb.sock, mode 0600: root only). One command per connection, one
// line: "reload" or "drain". The answer is one line: "ok" or "error:
// <message>". "drain" answers once the graceful stop has begun (routes
// withdrawn on a cluster instance); tslb exits when it ends.

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
			default:
				fmt.Fprintf(c, "error: unknown command %q (known: reload, drain)\n", strings.TrimSpace(line))
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

// controlCommand sends one command to a running tslb's control socket.
func controlCommand(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sock := fs.String("socket", config.DefaultControlSocket, "control socket of the running tslb")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := net.DialTimeout("unix", *sock, 2*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tslb %s: %v\n", name, err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintln(c, name)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintf(os.Stderr, "tslb %s: %v\n", name, err)
		return 1
	}
	line = strings.TrimSpace(line)
	if line != "ok" {
		fmt.Fprintf(os.Stderr, "tslb %s: %s\n", name, line)
		return 1
	}
	fmt.Printf("tslb %s: ok\n", name)
	return 0
}
