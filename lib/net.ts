/**
 * Network helpers that know nothing of mail: listen addresses, loopback, CIDR networks.
 */
import net from 'node:net';

/** Host and port of a `host:port` listen address; undefined when it is not one. IPv6 goes in brackets. */
export function parseListenAddress(address: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(address);
  if (!m) return undefined;
  const port = Number(m[3]);
  const hostName = m[1] ?? m[2] ?? '';
  if (port > 65535) return undefined;
  if (m[1] !== undefined && !net.isIPv6(hostName)) return undefined;
  if (/^[\d.]+$/.test(hostName) && !net.isIPv4(hostName)) return undefined;
  return { host: hostName, port };
}

const loopback = new net.BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** True when a listen address only accepts connections from this machine. */
export function isLoopbackAddress(address: string): boolean {
  const host = parseListenAddress(address)?.host;
  return host !== undefined && isLoopbackHost(host);
}

/** True for `localhost`, 127.0.0.0/8, ::1 and IPv4-mapped loopback (`::ffff:127.0.0.1`, as client addresses arrive). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const h = host.toLowerCase().startsWith('::ffff:') && net.isIPv4(host.slice(7)) ? host.slice(7) : host;
  const family = net.isIP(h);
  return family !== 0 && loopback.check(h, family === 4 ? 'ipv4' : 'ipv6');
}

/** An IP address or CIDR network ("10.0.0.0/8", "192.168.1.5", "2001:db8::/32"); undefined when it is neither. */
export function parseCidr(value: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address = '', bits, ...rest] = value.split('/');
  const family = net.isIP(address);
  if (rest.length || family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return undefined;
  return { address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}
