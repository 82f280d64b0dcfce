"""Initial schema: interactions, feedback, datasets, jobs, adapters, routes, api_keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here (not imported from schema.py) so later schema edits never change this file.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table('adapters',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('base_model', sa.String(length=256), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=True),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('metrics', JSONType, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version', name='uq_adapters_name_version')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('revoked', sa.Float(), nullable=True),
    sa.Column('limits', JSONType, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_index('ix_api_keys_project', 'api_keys', ['project'], unique=False)
    op.create_table('datasets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('project', sa.String(length=128), nullable=True),
    sa.Column('path', sa.String(length=1024), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('filters', JSONType, nullable=True),
    sa.Column('report', JSONType, nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_datasets_created', 'datasets', ['created'], unique=False)
    op.create_table('feedback',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('completion_id', sa.String(length=96), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('project', sa.String(length=128), nullable=True),
    sa.Column('rating', sa.Float(), nullable=True),
    sa.Column('rating_raw', sa.Float(), nullable=True),
    sa.Column('rating_scale', sa.String(length=16), nullable=True),
    sa.Column('correction', JSONType, nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('tags', JSONType, nullable=True),
    sa.Column('metadata', JSONType, nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_feedback_completion_created', 'feedback', ['completion_id', 'created'], unique=False)
    op.create_table('interactions',
    sa.Column('id', sa.String(length=96), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('project', sa.String(length=128), nullable=True),
    sa.Column('api_key_id', sa.String(length=128), nullable=True),
    sa.Column('requested_model', sa.String(length=256), nullable=False),
    sa.Column('target', sa.String(length=128), nullable=True),
    sa.Column('upstream_model', sa.String(length=256), nullable=True),
    sa.Column('upstream_base_url', sa.String(length=512), nullable=True),
    sa.Column('upstream_id', sa.String(length=256), nullable=True),
    sa.Column('arm', sa.String(length=384), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('stream', sa.Boolean(), nullable=False),
    sa.Column('store', sa.Boolean(), nullable=False),
    sa.Column('request', JSONType, nullable=True),
    sa.Column('response', JSONType, nullable=True),
    sa.Column('finish_reason', sa.String(length=32), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('cached_tokens', sa.Integer(), nullable=True),
    sa.Column('total_tokens', sa.Integer(), nullable=True),
    sa.Column('ttft_s', sa.Float(), nullable=True),
    sa.Column('latency_s', sa.Float(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('error', JSONType, nullable=True),
    sa.Column('metadata', JSONType, nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.String(length=96), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_interactions_created_id', 'interactions', ['created', 'id'], unique=False)
    op.create_index('ix_interactions_parent_id', 'interactions', ['parent_id'], unique=False,
                    sqlite_where=sa.text('parent_id IS NOT NULL'),
                    postgresql_where=sa.text('parent_id IS NOT NULL'))
    op.create_index('ix_interactions_project_created', 'interactions', ['project', 'created'], unique=False)
    op.create_index('ix_interactions_requested_model', 'interactions', ['requested_model'], unique=False)
    op.create_table('jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=True),
    sa.Column('project', sa.String(length=128), nullable=True),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('training_file', sa.String(length=256), nullable=True),
    sa.Column('validation_file', sa.String(length=256), nullable=True),
    sa.Column('dataset_id', sa.String(length=64), nullable=True),
    sa.Column('fine_tuned_model', sa.String(length=256), nullable=True),
    sa.Column('external_id', sa.String(length=256), nullable=True),
    sa.Column('method', JSONType, nullable=True),
    sa.Column('metadata', JSONType, nullable=True),
    sa.Column('error', JSONType, nullable=True),
    sa.Column('events', JSONType, nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_jobs_created', 'jobs', ['created'], unique=False)
    op.create_index('ix_jobs_status', 'jobs', ['status'], unique=False)
    op.create_table('routes',
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('config', JSONType, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('model')
    )


def downgrade() -> None:
    op.drop_table('routes')
    op.drop_index('ix_jobs_status', table_name='jobs')
    op.drop_index('ix_jobs_created', table_name='jobs')
    op.drop_table('jobs')
    op.drop_index('ix_interactions_requested_model', table_name='interactions')
    op.drop_index('ix_interactions_project_created', table_name='interactions')
    op.drop_index('ix_interactions_parent_id', table_name='interactions')
    op.drop_index('ix_interactions_created_id', table_name='interactions')
    op.drop_table('interactions')
    op.drop_index('ix_feedback_completion_created', table_name='feedback')
    op.drop_table('feedback')
    op.drop_index('ix_datasets_created', table_name='datasets')
    op.drop_table('datasets')
    op.drop_index('ix_api_keys_project', table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_table('adapters')
