package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"tslb/config"
	"tslb/lb"
	"tslb/lb/statuspage"
)

func cmdCheckConfig(args []string) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: tslb check-config FILE [FILE...]")
		return 2
	}
	// Every file on its own, then, for several files, the rules of one
	// cluster across them (config.CheckCluster).
	code := 0
	var cfgs []*config.Config
	for _, path := range fs.Args() {
		c, err := config.Load(path)
		if err != nil {
			printConfigErrors(path, err)
			code = 2
			continue
		}
		cfgs = append(cfgs, c)
		fmt.Printf("%s: ok\n", path)
	}
	if fs.NArg() > 1 {
		if code != 0 {
			fmt.Fprintln(os.Stderr, "cluster: not checked across files: fix the files above first")
			return code
		}
		if errs := config.CheckCluster(cfgs); len(errs) > 0 {
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e.Error())
			}
			fmt.Fprintf(os.Stderr, "cluster: %d error(s) across %d files\n", len(errs), len(cfgs))
			return 2
		}
		fmt.Printf("cluster %q: %d files ok together\n", cfgs[0].Cluster.Name, len(cfgs))
	}
	return code
}

func printConfigErrors(path string, err error) {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(os.Stderr, e.Error())
		}
		fmt.Fprintf(os.Stderr, "%s: %d error(s)\n", path, len(errs))
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
}

// newLogger returns a logger writing to w at level ("debug", "info",
// "warn", "error"; anything else means info) in format: "json" is the
// log/slog JSON handler (one object per line), anything else the text
// handler (key=value pairs). Both write time, level and msg first.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("c", "/etc/tslb/tslb.yaml", "configuration file")
	logFormat := fs.String("log-format", "", "log format, text or json; overrides log.format of the configuration")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "tslb run: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *logFormat != "" && !config.ValidLogFormat(*logFormat) {
		fmt.Fprintf(os.Stderr, "tslb run: -log-format %q: want text or json\n", *logFormat)
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(*path, err)
		return 2
	}
	format := cfg.Log.Format
	if *logFormat != "" {
		format = *logFormat
	}
	log := newLogger(os.Stderr, cfg.Log.Level, format)
	b, err := lb.New(cfg, lb.Options{Logger: log})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// `tslb drain` ends Run as SIGTERM does.
	ctx, drain := context.WithCancel(ctx)
	defer drain()

	// The status page, /status.json (computed at most every 250 ms however
	// many ask), /pcap/<name>; `tslb status` reads the same cache.
	sp := statuspage.New(b.Status, statuspage.Options{PcapDir: b.PcapDir()})
	var srv *http.Server
	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			log.Error("metrics listen", "addr", cfg.Metrics.Listen, "err", err)
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", b.MetricsHandler())
		sp.Register(mux) // /, /status.json, /pcap/{name}
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		go sp.Run(ctx)
		log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics", "status", "http://"+ln.Addr().String()+"/")
	}

	// Reload: SIGHUP or `tslb reload` on the control socket. The file is
	// parsed and validated first; an invalid file, or a change that needs
	// a restart, keeps the running configuration.
	var reloadMu sync.Mutex
	reload := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		ncfg, err := config.Load(*path)
		if err != nil {
			var errs config.Errors
			if errors.As(err, &errs) {
				for _, e := range errs {
					log.Error("reload: invalid configuration, keeping the running one", "error", e.Error())
				}
			} else {
				log.Error("reload: keeping the running configuration", "err", err)
			}
			b.ReloadFailed(err)
			return err
		}
		if err := b.Reload(ncfg); err != nil {
			log.Error("reload: keeping the running configuration", "err", err)
			return err
		}
		log.Info("reload: configuration applied", "services", len(ncfg.Services))
		return nil
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			reload()
		}
	}()
	if sock := cfg.Control.Socket; sock != "" {
		ln, err := listenControl(sock)
		if err != nil {
			log.Error("control socket", "path", sock, "err", err)
			return 1
		}
		defer ln.Close()
		go serveControl(ln, controlCommands{reload: reload, drain: func() error {
			log.Info("drain requested on the control socket")
			b.Drain()
			drain()
			return nil
		}, status: func() ([]byte, error) { return json.Marshal(sp.Status()) }}, log)
		log.Info("control socket", "path", sock)
	}

	log.Info("tslb running", "version", version, "links", len(cfg.Links), "services", len(cfg.Services))
	runErr := b.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	if runErr != nil {
		log.Error("datapath stopped", "err", runErr)
		return 1
	}
	log.Info("tslb stopped")
	return 0
}
