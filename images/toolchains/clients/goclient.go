// GET a URL with Go's net/http; print `status=N` and the body, or `error=...`.
//
//	goclient URL
//
// As an application uses it: the default transport (proxy from the environment, trust from
// SSL_CERT_FILE / SSL_CERT_DIR or the system roots). Built into the image, standard library only.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Println("error=" + strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Println("error=" + strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Printf("status=%d\n%s\n", resp.StatusCode, body)
}
