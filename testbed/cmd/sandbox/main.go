// Command sandbox is the test bed's machine: a k3s-like node in namespaces of its own, made
// and removed by a keeper on the host (see testbed/README.md and package sandbox).
//
//	sandbox run --dir DIR --cgroup NAME [--hostname H] [--bind SRC:DST[:ro]]...
//	    [--file DST=SRC]... [--site-cmd 'CMD ARGS'] [--resolv-conf FILE]
//	sandbox exec --dir DIR [--wd PATH] [--] CMD ARGS...
package main

import (
	"flag"
	"fmt"
	"os"

	"sparkgap.dev/testbed/pkg/sandbox"
)

const usage = `usage:
  sandbox run --dir DIR --cgroup NAME [--hostname H] [--bind SRC:DST[:ro]]... [--file DST=SRC]...
              [--site-cmd 'CMD ARGS'] [--resolv-conf FILE]
      bring a node up, print "ready <init pid>", tear it down on EOF on stdin or SIGTERM
  sandbox exec --dir DIR [--wd PATH] [--] CMD ARGS...
      run CMD inside the node of DIR
`

type multi struct {
	parse func(string) error
}

func (m multi) String() string     { return "" }
func (m multi) Set(s string) error { return m.parse(s) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "__init":
		sandbox.Init()
	case "__site":
		cmd := ""
		if len(os.Args) > 2 {
			cmd = os.Args[2]
		}
		sandbox.Site(cmd)
	case "run":
		os.Exit(run(os.Args[2:]))
	case "exec":
		os.Exit(execCmd(os.Args[2:]))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "sandbox: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func run(args []string) int {
	var o sandbox.Options
	fl := flag.NewFlagSet("sandbox run", flag.ContinueOnError)
	fl.StringVar(&o.Dir, "dir", "", "the node's sandbox directory (exists; removed at teardown)")
	fl.StringVar(&o.Cgroup, "cgroup", "", "cgroup name, sparkgap-node-<test pid>-<n>")
	fl.StringVar(&o.Hostname, "hostname", sandbox.DefaultHostname, "the node's hostname")
	fl.StringVar(&o.SiteCmd, "site-cmd", "", "command run by /bin/sh in the site network (e.g. its DNS server)")
	fl.StringVar(&o.ResolvConf, "resolv-conf", "", "file installed as the node's /etc/resolv.conf")
	fl.Var(multi{func(s string) error {
		b, err := sandbox.ParseBind(s)
		o.Binds = append(o.Binds, b)
		return err
	}}, "bind", "SRC:DST[:ro], repeatable")
	fl.Var(multi{func(s string) error {
		f, err := sandbox.ParseFile(s)
		o.Files = append(o.Files, f)
		return err
	}}, "file", "DST=SRC, repeatable")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sandbox run: unexpected argument %q\n", fl.Arg(0))
		return 2
	}
	return sandbox.Run(o, os.Stdin, os.Stdout, os.Stderr)
}

func execCmd(args []string) int {
	fl := flag.NewFlagSet("sandbox exec", flag.ContinueOnError)
	dir := fl.String("dir", "", "the node's sandbox directory")
	wd := fl.String("wd", "", "working directory inside the node (default /)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fl.NArg() == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	err := sandbox.Exec(*dir, *wd, fl.Args())
	fmt.Fprintf(os.Stderr, "sandbox exec: %v\n", err)
	return 127
}
