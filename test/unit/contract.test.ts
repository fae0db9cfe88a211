import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  type DefinitionNode,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLInputType,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isRequiredInputField,
  Kind,
  type NamedTypeNode,
  type OperationDefinitionNode,
  parse,
  type TypeNode,
  typeFromAST,
  validate,
  visit,
} from 'graphql';
import { describe, expect, it } from 'vitest';
import { printedSchema } from '../../src/api/print-schema.js';
import { schema } from '../../src/api/schema/index.js';

// The client contract (contract/, a copy of shared/contract) against the schema built
// from src/api/schema. Operations and inputs that later issues add are listed as
// pending; a pending one that starts validating fails too, so the lists stay honest.

const contractDir = new URL('../../contract/', import.meta.url);
const sharedContractDir = new URL('../../../shared/contract/', import.meta.url);
const operationsFile = new URL('operations.graphql', contractDir);
const inputsFile = new URL('inputs.graphql', contractDir);

/**
 * Operations that need a later issue (generations, subscriptions, budgets, secrets,
 * usage, conversation) and do not validate yet. Empty now: the schema covers them all.
 */
const pendingOperations = new Set<string>([]);

/** Input types and enums of inputs.graphql that a later issue adds and the schema lacks yet. Empty now. */
const pendingInputs = new Set<string>([]);

function readContract(file: URL): DocumentNode {
  if (!existsSync(file)) {
    throw new Error(`The client contract is missing: ${fileURLToPath(file)}.`);
  }
  return parse(readFileSync(file, 'utf8'));
}

const operations = readContract(operationsFile);
const inputs = readContract(inputsFile);

const fragments = new Map(
  operations.definitions
    .filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION)
    .map((d) => [d.name.value, d]),
);
const operationDefinitions = operations.definitions.filter(
  (d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION,
);

/** An operation with every fragment it uses, directly or through other fragments: a document a client sends. */
function standalone(operation: OperationDefinitionNode): DocumentNode {
  const used = new Map<string, FragmentDefinitionNode>();
  const collect = (node: DefinitionNode) =>
    visit(node, {
      FragmentSpread(spread) {
        const name = spread.name.value;
        const fragment = fragments.get(name);
        if (!fragment) throw new Error(`${operation.name?.value} uses an undefined fragment ${name}`);
        if (used.has(name)) return;
        used.set(name, fragment);
        collect(fragment);
      },
    });
  collect(operation);
  return { kind: Kind.DOCUMENT, definitions: [operation, ...used.values()] };
}

const validationErrors = (operation: OperationDefinitionNode) => validate(schema, standalone(operation)).map((e) => e.message);

describe('the client contract (shared/contract)', () => {
  it.skipIf(!existsSync(sharedContractDir))('is copied unchanged into contract/ (skipped without shared/ beside the clone)', () => {
    for (const name of ['operations.graphql', 'inputs.graphql']) {
      expect(readFileSync(new URL(name, contractDir), 'utf8')).toBe(readFileSync(new URL(name, sharedContractDir), 'utf8'));
    }
  });

  it('has named, uniquely named operations, and the pending lists name only what it has', () => {
    const names = operationDefinitions.map((o) => o.name?.value);
    expect(names).not.toContain(undefined);
    expect(new Set(names).size).toBe(names.length);
    expect([...pendingOperations].filter((name) => !names.includes(name))).toEqual([]);

    const inputNames = inputs.definitions.flatMap((d) => ('name' in d && d.name ? [d.name.value] : []));
    expect([...pendingInputs].filter((name) => !inputNames.includes(name))).toEqual([]);
  });

  const ready = operationDefinitions.filter((o) => !pendingOperations.has(o.name!.value));
  const pending = operationDefinitions.filter((o) => pendingOperations.has(o.name!.value));

  it.each(ready.map((o) => [o.name!.value, o] as const))('%s validates against the schema', (_name, operation) => {
    expect(validationErrors(operation)).toEqual([]);
  });

  it.each(pending.map((o) => [o.name!.value, o] as const))(
    '%s is pending: it does not validate yet (remove it from pendingOperations once it does)',
    (_name, operation) => {
      expect(validationErrors(operation)).not.toEqual([]);
    },
  );
});

describe('the input types and enum values clients rely on (inputs.graphql)', () => {
  /** What is wrong with one definition of inputs.graphql in the schema; empty when it is all there. */
  function problems(definition: DefinitionNode): string[] {
    if (definition.kind === Kind.ENUM_TYPE_DEFINITION) {
      const type = schema.getType(definition.name.value);
      if (!isEnumType(type)) return [`enum ${definition.name.value} is missing`];
      return (definition.values ?? [])
        .filter((value) => !type.getValue(value.name.value))
        .map((value) => `${type.name}.${value.name.value} is missing`);
    }
    if (definition.kind === Kind.INPUT_OBJECT_TYPE_DEFINITION) {
      const type = schema.getType(definition.name.value);
      if (!isInputObjectType(type)) return [`input ${definition.name.value} is missing`];
      const fields = type.getFields();
      const listed = new Set((definition.fields ?? []).map((f) => f.name.value));
      const found: string[] = [];
      for (const field of definition.fields ?? []) {
        const actual = fields[field.name.value];
        if (!actual) {
          found.push(`${type.name}.${field.name.value} is missing`);
        } else if (!accepts(actual.type, field.type)) {
          found.push(`${type.name}.${field.name.value} is ${String(actual.type)}; clients send ${typeName(field.type)}`);
        }
      }
      // The schema may add fields, but a client that sends only the listed ones must still be valid.
      for (const extra of Object.values(fields).filter((f) => !listed.has(f.name) && isRequiredInputField(f))) {
        found.push(`${type.name}.${extra.name} is required but not in the contract`);
      }
      return found;
    }
    return [`unexpected ${definition.kind} in inputs.graphql`];
  }

  /** Whether every value of the contract's type is a valid value of the schema's type. */
  function accepts(actual: GraphQLInputType, contract: TypeNode): boolean {
    const sent = typeFromAST(schema, contract as NamedTypeNode) as GraphQLInputType | undefined;
    return sent !== undefined && acceptsType(actual, sent);
  }

  function acceptsType(actual: GraphQLInputType, sent: GraphQLInputType): boolean {
    if (isNonNullType(actual)) return isNonNullType(sent) && acceptsType(actual.ofType, sent.ofType);
    if (isNonNullType(sent)) return acceptsType(actual, sent.ofType);
    if (isListType(actual)) return isListType(sent) && acceptsType(actual.ofType, sent.ofType);
    return !isListType(sent) && actual.name === sent.name;
  }

  function typeName(type: TypeNode): string {
    if (type.kind === Kind.NON_NULL_TYPE) return `${typeName(type.type)}!`;
    if (type.kind === Kind.LIST_TYPE) return `[${typeName(type.type)}]`;
    return type.name.value;
  }

  const definitions = inputs.definitions.map((d) => [('name' in d && d.name?.value) || d.kind, d] as const);

  it.each(definitions.filter(([name]) => !pendingInputs.has(name)))('%s is in the schema with at least these fields/values', (_name, definition) => {
    expect(problems(definition)).toEqual([]);
  });

  it.each(definitions.filter(([name]) => pendingInputs.has(name)))(
    '%s is pending: not in the schema yet (remove it from pendingInputs once it is)',
    (_name, definition) => {
      expect(problems(definition)).not.toEqual([]);
    },
  );

  it('notices a missing field, a missing value, a stricter type and a new required field', () => {
    const [input, enumeration] = parse(`
      input CreateProjectInput { name: String  notThere: Int }
      enum ProjectRole { OWNER NOT_A_ROLE }
    `).definitions as [DefinitionNode, DefinitionNode];
    expect(problems(input)).toEqual([
      'CreateProjectInput.name is String!; clients send String',
      'CreateProjectInput.notThere is missing',
      'CreateProjectInput.target is required but not in the contract',
    ]);
    expect(problems(enumeration)).toEqual(['ProjectRole.NOT_A_ROLE is missing']);
  });
});

describe('schema/schema.graphql', () => {
  it('is the printed schema (run `npm run schema:print` when this fails)', () => {
    const committed = readFileSync(new URL('../../schema/schema.graphql', import.meta.url), 'utf8');
    expect(committed).toBe(printedSchema());
  });
});
