// Command toolserver runs the quickstart's docs MCP server on loopback. Its
// API key comes from DOCS_API_KEY; give the same value to the control plane
// with `bulkhead secret set docs-api-key`, and only the gateway will use it.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/bulkhead-dev/bulkhead/examples/quickstart"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3001", "address (loopback)")
	flag.Parse()
	key := os.Getenv("DOCS_API_KEY")
	if key == "" {
		log.Fatal("set DOCS_API_KEY")
	}
	srv := &http.Server{Addr: *listen, Handler: quickstart.ToolServer(key), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("docs MCP server on http://%s/mcp", *listen)
	log.Fatal(srv.ListenAndServe())
}
