/**
 * The key material of each ACME certificate, made by the stack (`@pulumi/tls`), so no private key
 * ever crosses the network in clear: the keys ride the secret stdin of the SSH deploy to every LB,
 * like the API token and the peer key, and the peers later exchange only public chains.
 *
 * - the ACME account key (ECDSA P-256): signs the orders; every LB holds it, so whoever leads can
 *   order and renew;
 * - the certificate's private key (ECDSA P-256): the same on every LB, so an issued chain fits every
 *   droplet and a failover serves the same certificate at once;
 * - a self-signed placeholder for the certificate's domains, signed with that key: HAProxy starts
 *   with it (HAProxy will not start with an https frontend whose certificate file is missing) until
 *   fipd has the real one issued, which replaces it with a hitless reload.
 *
 * A tls.PrivateKey has no trigger, so these keys stay as long as the certificate's name does; a
 * change of domains replaces only the placeholder.
 */
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import type { AcmeCertificate, PemCertificate } from "./lb-config.js";

/** Ten years: a placeholder that expires would add a second problem to a certificate that was never issued. */
export const PLACEHOLDER_VALIDITY_HOURS = 10 * 365 * 24;
/** X.509 limits a subject's common name to 64 characters; the names are in the subjectAltName anyway. */
const MAX_COMMON_NAME = 64;

export interface AcmeKeys {
  readonly name: string;
  /** Secret PEMs. */
  readonly accountKeyPem: pulumi.Output<string>;
  readonly keyPem: pulumi.Output<string>;
  /** Secret: the placeholder chain and its key, as HAProxy's `crt` file is made of. */
  readonly placeholder: pulumi.Output<PemCertificate>;
}

export function acmeKeysFor(prefix: string, a: AcmeCertificate, opts: pulumi.CustomResourceOptions): AcmeKeys {
  const ecdsa = { algorithm: "ECDSA", ecdsaCurve: "P256" };
  const account = new tls.PrivateKey(`${prefix}-acme-${a.name}-account-key`, ecdsa, opts);
  const key = new tls.PrivateKey(`${prefix}-acme-${a.name}-key`, ecdsa, opts);
  const cn = a.domains.find((d) => d.length <= MAX_COMMON_NAME);
  const cert = new tls.SelfSignedCert(
    `${prefix}-acme-${a.name}-placeholder`,
    {
      privateKeyPem: key.privateKeyPem,
      subject: { ...(cn ? { commonName: cn } : {}), organization: "ha-lb placeholder: the ACME certificate is not issued yet" },
      dnsNames: [...a.domains],
      validityPeriodHours: PLACEHOLDER_VALIDITY_HOURS,
      allowedUses: ["digital_signature", "key_encipherment", "server_auth"],
    },
    opts,
  );
  const keyPem = pulumi.secret(key.privateKeyPem);
  return {
    name: a.name,
    accountKeyPem: pulumi.secret(account.privateKeyPem),
    keyPem,
    placeholder: pulumi.secret(pulumi.all([cert.certPem, keyPem]).apply(([certificate, privateKey]) => ({ certificate, privateKey }))),
  };
}
