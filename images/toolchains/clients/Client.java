// GET a URL with java.net.http.HttpClient; print `status=N` and the body, or `error=...`.
//     java Client.java URL        (single-file source launch, JDK 11+)
// As an application builds it: no proxy, SSLContext or trust options; only the JVM's defaults,
// which the pod sets through JAVA_TOOL_OPTIONS.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Client {
    public static void main(String[] args) {
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(20)).build();
        HttpRequest request = HttpRequest.newBuilder(URI.create(args[0]))
                .timeout(Duration.ofSeconds(20)).build();
        try {
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println("status=" + response.statusCode());
            System.out.println(response.body());
        } catch (Exception e) {
            System.out.println(("error=" + e).replace("\n", " "));
        }
    }
}
