// Verifies server chains the way Go's net/http does: crypto/x509 Verify against a pool holding
// only the given CA, for a DNS name or IP address, with the serverAuth key usage; then a real
// crypto/tls handshake (which runs the same Verify plus its own checks) to a loopback server
// that serves the chain, with ServerName set to the name.
//
//	go run verify.go CA_PEM CHAIN_PEM NAME HOST:PORT [CA_PEM CHAIN_PEM NAME HOST:PORT ...]
//
// One line per check, in order: "OK", or "FAIL " and the error. Exit status 0 when every check
// passed, 1 when one failed, 2 on a usage error. Several checks per run: one build, not many.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"time"
)

const timeout = 10 * time.Second

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		// ParseCertificate is Go's strict DER parser: it refuses what crypto/tls would refuse.
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return certs, nil
}

func check(caPath, chainPath, name, target string) error {
	cas, err := readCerts(caPath)
	if err != nil {
		return err
	}
	chain, err := readCerts(chainPath)
	if err != nil {
		return err
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		DNSName:       name,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("crypto/x509 Verify: %w", err)
	}
	dialer := &net.Dialer{Timeout: timeout, Deadline: time.Now().Add(timeout)}
	conn, err := tls.DialWithDialer(dialer, "tcp", target, &tls.Config{
		RootCAs:    roots,
		ServerName: name,
		MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return fmt.Errorf("crypto/tls handshake: %w", err)
	}
	return conn.Close()
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 || len(args)%4 != 0 {
		fmt.Println("usage: verify CA_PEM CHAIN_PEM NAME HOST:PORT [...]")
		os.Exit(2)
	}
	status := 0
	for i := 0; i < len(args); i += 4 {
		if err := check(args[i], args[i+1], args[i+2], args[i+3]); err != nil {
			fmt.Println("FAIL", err)
			status = 1
		} else {
			fmt.Println("OK")
		}
	}
	os.Exit(status)
}
