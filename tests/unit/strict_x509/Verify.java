// Verifies server chains the way the JVM's TLS stack does: a PKIX TrustManagerFactory whose
// KeyStore holds only the given CA; checkServerTrusted(chain, authType) for each authType JSSE
// uses with that key (the TLS-server end-entity checks: extended key usage, and key usage for the
// key exchange; UNKNOWN is TLS 1.3's); then a real handshake to a loopback server with HTTPS
// endpoint identification, so the name is checked as HttpClient checks it (SNI and peer host are
// NAME, the TCP connection goes to HOST:PORT).
//
//   java Verify.java CA_PEM CHAIN_PEM NAME HOST:PORT [CA_PEM CHAIN_PEM NAME HOST:PORT ...]
//
// One line per check, in order: "OK", or "FAIL " and the error. Exit status 0 when every check
// passed, 1 when one failed, 2 on a usage error. Several checks per run: one JVM start, not many.

import java.io.FileInputStream;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.List;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;

public class Verify {
    private static final int TIMEOUT_MS = 10_000;

    static List<X509Certificate> read(String path) throws Exception {
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        List<X509Certificate> certs = new ArrayList<>();
        try (InputStream in = new FileInputStream(path)) {
            for (Certificate cert : factory.generateCertificates(in)) {
                certs.add((X509Certificate) cert);
            }
        }
        if (certs.isEmpty()) {
            throw new IllegalArgumentException(path + ": no certificate");
        }
        return certs;
    }

    static TrustManager[] trustOnly(List<X509Certificate> cas) throws Exception {
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        for (int i = 0; i < cas.size(); i++) {
            store.setCertificateEntry("proxy-ca-" + i, cas.get(i));
        }
        TrustManagerFactory factory = TrustManagerFactory.getInstance("PKIX");
        factory.init(store);
        return factory.getTrustManagers();
    }

    static String[] authTypes(X509Certificate leaf) {
        String algorithm = leaf.getPublicKey().getAlgorithm();
        if (algorithm.equals("EC")) {
            return new String[] {"ECDHE_ECDSA", "UNKNOWN"};
        }
        return new String[] {"ECDHE_RSA", "RSA", "UNKNOWN"};
    }

    static void handshake(TrustManager[] managers, String name, String target) throws Exception {
        int colon = target.lastIndexOf(':');
        String host = target.substring(0, colon);
        int port = Integer.parseInt(target.substring(colon + 1));
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(null, managers, null);
        Socket raw = new Socket();
        raw.connect(new InetSocketAddress(host, port), TIMEOUT_MS);
        raw.setSoTimeout(TIMEOUT_MS);
        try (SSLSocket socket =
                (SSLSocket) context.getSocketFactory().createSocket(raw, name, port, true)) {
            SSLParameters params = socket.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS");
            socket.setSSLParameters(params);
            socket.startHandshake();
        }
    }

    static void check(String ca, String chainPath, String name, String target) throws Exception {
        TrustManager[] managers = trustOnly(read(ca));
        X509TrustManager manager = (X509TrustManager) managers[0];
        X509Certificate[] chain = read(chainPath).toArray(new X509Certificate[0]);
        for (String authType : authTypes(chain[0])) {
            try {
                manager.checkServerTrusted(chain, authType);
            } catch (Exception e) {
                throw new Exception("checkServerTrusted(" + authType + "): " + e, e);
            }
        }
        try {
            handshake(managers, name, target);
        } catch (Exception e) {
            throw new Exception("handshake as " + name + ": " + e, e);
        }
    }

    public static void main(String[] args) {
        if (args.length == 0 || args.length % 4 != 0) {
            System.out.println("usage: java Verify.java CA_PEM CHAIN_PEM NAME HOST:PORT [...]");
            System.exit(2);
        }
        int status = 0;
        for (int i = 0; i < args.length; i += 4) {
            try {
                check(args[i], args[i + 1], args[i + 2], args[i + 3]);
                System.out.println("OK");
            } catch (Exception e) {
                System.out.println("FAIL " + e.getMessage().replace('\n', ' '));
                status = 1;
            }
        }
        System.exit(status);
    }
}
