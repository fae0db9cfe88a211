import { builder } from '../builder.js';
import './scalars.js';
import './connections.js';
import './errors.js';
import './auth.js';
import './users.js';
import './projects.js';
import './generations.js';
import './outputs.js';
import './fixes.js';
import './secrets.js';

export const schema = builder.toSchema({ sortSchema: false });
