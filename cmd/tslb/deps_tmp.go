package main
import (
_ "github.com/mdlayher/packet"
_ "github.com/gopacket/gopacket/layers"
_ "github.com/gopacket/gopacket/pcapgo"
_ "github.com/spf13/viper"
_ "gopkg.in/yaml.v3"
_ "github.com/prometheus/client_golang/prometheus"
_ "github.com/prometheus/client_golang/prometheus/promhttp"
_ "github.com/vishvananda/netlink"
_ "github.com/vishvananda/netns"
_ "golang.org/x/sys/unix"
)
func main(){}
