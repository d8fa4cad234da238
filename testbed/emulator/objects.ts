/** Response objects shaped like the DigitalOcean API's (the OpenAPI subset in testbed/emulator/do-openapi). */
export interface DropletState {
  id: number;
  name: string;
  region: string;
  publicIpv4: string;
  privateIpv4: string;
  anchorIpv4: string;
  tags: string[];
  sourceAddress?: string;
  createdAt: string;
}
export interface ReservedIpState {
  ip: string;
  region: string;
  dropletId: number | null;
  pendingActionId: number | null;
}
export interface ActionState {
  id: number;
  status: "in-progress" | "completed" | "errored";
  type: string;
  startedAt: string;
  completedAt: string | null;
  ip: string;
  region: string;
}

export const regionObject = (slug: string) => ({
  name: `Region ${slug}`,
  slug,
  features: ["private_networking", "backups", "ipv6", "metadata"],
  available: true,
  sizes: ["s-1vcpu-1gb", "s-1vcpu-512mb-10gb"],
});

/** The IPv4 address as an unsigned 32-bit integer: what the API puts in an IP action's resource_id. */
export const ipToInt = (ip: string) => ip.split(".").reduce((a, o) => a * 256 + Number(o), 0);

export function dropletObject(d: DropletState) {
  return {
    id: d.id,
    name: d.name,
    memory: 1024,
    vcpus: 1,
    disk: 25,
    locked: false,
    status: "active",
    created_at: d.createdAt,
    features: ["monitoring", "private_networking"],
    backup_ids: [],
    next_backup_window: null,
    snapshot_ids: [],
    image: {
      id: 160000000,
      name: "24.04 (LTS) x64",
      distribution: "Ubuntu",
      slug: "ubuntu-24-04-x64",
      public: true,
      regions: [d.region],
      created_at: "2024-04-25T00:00:00Z",
      type: "base",
      min_disk_size: 7,
      size_gigabytes: 2.4,
      description: "Ubuntu 24.04 x64",
      tags: [],
      status: "available",
    },
    volume_ids: [],
    size: {
      slug: "s-1vcpu-1gb",
      memory: 1024,
      vcpus: 1,
      disk: 25,
      transfer: 1,
      price_monthly: 6,
      price_hourly: 0.00893,
      regions: [d.region],
      available: true,
      description: "Basic",
    },
    size_slug: "s-1vcpu-1gb",
    networks: {
      v4: [
        { ip_address: d.publicIpv4, netmask: "255.255.255.0", gateway: d.publicIpv4.replace(/\.\d+$/, ".1"), type: "public" },
        { ip_address: d.privateIpv4, netmask: "255.255.255.0", gateway: d.privateIpv4.replace(/\.\d+$/, ".1"), type: "private" },
      ],
      v6: [],
    },
    region: regionObject(d.region),
    tags: d.tags,
    vpc_uuid: "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
  };
}

export function actionObject(a: ActionState) {
  return {
    id: a.id,
    status: a.status,
    type: a.type,
    started_at: a.startedAt,
    completed_at: a.completedAt,
    resource_id: ipToInt(a.ip),
    resource_type: "reserved_ip",
    region: regionObject(a.region),
    region_slug: a.region,
  };
}

export const errorBody = (id: string, message: string) => ({ id, message, request_id: "00000000-0000-4000-8000-000000000000" });
