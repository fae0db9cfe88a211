import { ConfigError } from '../config.js';
import type { Db } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import { secretContext } from './projects.js';
import type { SecretBox } from './secret-box.js';
import { secretStore } from './store.js';

/**
 * Start-up refuses a KILN_ENCRYPTION_KEY that cannot open the secrets already stored
 * (a typo, or another environment's key): otherwise every run of every project with
 * its own key would fail later, one by one. Without stored secrets any key is fine.
 */
export async function verifyEncryptionKey(db: Db, box: SecretBox): Promise<void> {
  const stored = await serviceScope(db).run((tx) => secretStore.anyStored(tx));
  if (!stored) return;
  try {
    box.open(stored.ciphertext, secretContext(stored.projectId, stored.name));
  } catch {
    throw new ConfigError([
      'KILN_ENCRYPTION_KEY does not decrypt the project secrets stored in the database: start with the key they were stored with ' +
        '(secrets stored under a lost key can only be deleted, e.g. `delete from project_secrets`, and set again)',
    ]);
  }
}
