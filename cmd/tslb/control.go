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
// line: "reload". The answer is one line: "ok" or "error: <message>".

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

func serveControl(ln net.Listener, reload func() error, log *slog.Logger) {
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
			switch strings.TrimSpace(line) {
			case "reload":
				if err := reload(); err != nil {
					fmt.Fprintf(c, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
					return
				}
				fmt.Fprintln(c, "ok")
			default:
				fmt.Fprintf(c, "error: unknown command %q (known: reload)\n", strings.TrimSpace(line))
			}
		}()
	}
}

// cmdReload asks a running tslb to reload its configuration file.
func cmdReload(args []string) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	sock := fs.String("socket", config.DefaultControlSocket, "control socket of the running tslb")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := net.DialTimeout("unix", *sock, 2*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb reload:", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintln(c, "reload")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(os.Stderr, "tslb reload:", err)
		return 1
	}
	line = strings.TrimSpace(line)
	if line != "ok" {
		fmt.Fprintln(os.Stderr, "tslb reload:", line)
		return 1
	}
	fmt.Println("tslb reload: ok")
	return 0
}
